"""What a failed call says: the diagnosis of gRPC's connection messages, the advice in the
Python client's and the CLI's words, the server's field words as CLI flags. No server."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import grpc
import pytest
from bertserve.client.channel import Connection
from bertserve.client.cli import cli_message, cli_words, install_hint
from bertserve.client.errors import BertserveError, diagnose

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
LOCAL = Connection("127.0.0.1:50051", tls=False, token=False, timeout=60)
SECURE = Connection("127.0.0.1:50051", tls=True, token=True, timeout=60)
# gRPC's own messages, as grpcio 1.85 reports them
REFUSED = (
    "connections to all backends failing; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to "
    "connect to remote host: Connection refused"
)
CLOSED = (
    "connections to all backends failing; last error: UNAVAILABLE: ipv4:127.0.0.1:2: Socket closed"
)
PLAINTEXT = (
    "connections to all backends failing; last error: UNKNOWN: ipv4:127.0.0.1:3: Tls handshake "
    "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:"
    "WRONG_VERSION_NUMBER: Invalid certificate verification context: OK"
)
UNTRUSTED = (
    "connections to all backends failing; last error: UNKNOWN: ipv4:127.0.0.1:4: Tls handshake "
    "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
    "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK"
)
WRONG_NAME = (
    "connections to all backends failing; last error: UNKNOWN: ipv4:127.0.0.1:5: Custom "
    "verification check failed with error: UNAUTHENTICATED: Hostname Verification Check failed."
)
UNRESOLVED = "errors resolving nohost.invalid:50051: [field:hostname lookup error:...]"


@pytest.mark.parametrize(
    ("code", "details", "connection", "problem"),
    [
        (UNAVAILABLE, REFUSED, LOCAL, "no_server"),
        (UNAVAILABLE, CLOSED, LOCAL, "wants_tls"),
        (UNAVAILABLE, CLOSED, SECURE, "client_cert"),
        (UNAVAILABLE, PLAINTEXT, SECURE, "not_tls"),
        (UNAVAILABLE, UNTRUSTED, SECURE, "untrusted"),
        (UNAVAILABLE, WRONG_NAME, SECURE, "wrong_name"),
        (UNAVAILABLE, UNRESOLVED, LOCAL, "unresolved"),
        (grpc.StatusCode.UNAUTHENTICATED, "no authorization metadata", LOCAL, "token_missing"),
        (grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid", SECURE, "token_refused"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", LOCAL, "deadline"),
        # the server's own errors: they say what was wrong themselves
        (UNAVAILABLE, "the server is shutting down", LOCAL, ""),
        (grpc.StatusCode.INVALID_ARGUMENT, "texts[0]: empty string", LOCAL, ""),
    ],
)
def test_connection_failures_are_recognised(code, details, connection, problem):
    assert diagnose(code, details, "", connection) == problem


def test_an_idle_stream_closed_by_the_server_is_not_the_callers_timeout():
    assert diagnose(grpc.StatusCode.DEADLINE_EXCEEDED, "idle", "IDLE", LOCAL) == ""


def test_the_exception_keeps_its_code_and_details_and_gains_the_advice():
    error = BertserveError(UNAVAILABLE, REFUSED).advise(LOCAL)
    assert error.code is UNAVAILABLE and error.details == REFUSED
    assert error.problem == "no_server"
    assert str(error).startswith(
        "UNAVAILABLE: no bertserve server answered at 127.0.0.1:50051: is one running? start "
        "one with `bertserve serve --repo models` (or `./dev serve`), or pass target='HOST:PORT'"
    )
    assert str(error).endswith(f"(details: {REFUSED})")
    # the CLI names its flags instead
    message = cli_message(error)
    assert "or pass --target HOST:PORT (or set $BERTSERVE_TARGET)" in message
    assert message.endswith(f"(UNAVAILABLE: {REFUSED})")
    assert "target='" not in message
    # advised once: a second connection does not rewrite it
    assert error.advise(SECURE).connection is LOCAL


def test_each_problem_names_the_flag_that_fixes_it():
    def cli(code: grpc.StatusCode, details: str, connection: Connection) -> str:
        return cli_message(BertserveError(code, details).advise(connection))

    assert "it probably serves TLS (started with --tls-cert); pass --tls CA.pem" in cli(
        UNAVAILABLE, CLOSED, LOCAL
    )
    assert "speaks plaintext, not TLS: drop --tls" in cli(UNAVAILABLE, PLAINTEXT, SECURE)
    assert "not signed by a CA this client trusts: pass --tls CA.pem" in cli(
        UNAVAILABLE, UNTRUSTED, SECURE
    )
    no_token = cli(grpc.StatusCode.UNAUTHENTICATED, "no authorization metadata", LOCAL)
    assert "requires a bearer token: pass --token TOKEN (or set $BERTSERVE_TOKEN)" in no_token
    refused = cli(grpc.StatusCode.UNAUTHENTICATED, "not valid", SECURE)
    assert "refused this bearer token: check --token" in refused
    late = cli(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", LOCAL)
    assert "no answer from 127.0.0.1:50051 within 60 s: pass a longer --timeout SECONDS" in late
    # a Python call may have passed its own timeout: the client's is not named
    python = str(
        BertserveError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded").advise(LOCAL)
    )
    assert "within the timeout: pass a longer timeout= (seconds)" in python


def test_server_field_words_become_cli_flags():
    args = argparse.Namespace(input=None)
    too_long = "texts[1]: 900 tokens, longer than the model's limit of 512; shorten it or set "
    assert cli_words(too_long + "truncate=true", args) == (
        "text 2: 900 tokens, longer than the model's limit of 512; shorten it or pass --truncate"
    )
    # where the sub-command has --long-text, it is offered too; bulk names no batch index
    bulk = argparse.Namespace(input="texts.txt", long_text=None)
    assert cli_words(too_long + "truncate=true", bulk) == (
        "a text of the input: 900 tokens, longer than the model's limit of 512; shorten it or "
        "pass --truncate (or --long-text chunk)"
    )
    assert cli_words(
        "texts[0]: 900 tokens; shorten it, or set long_text to truncate or chunk", bulk
    ) == ("a text of the input: 900 tokens; shorten it, or pass --long-text chunk (or truncate)")
    assert cli_words("return_chunks: allowed only with long_text=chunk", bulk) == (
        "return_chunks: allowed only with --long-text chunk"
    )
    assert cli_words("variant='int9': model 'm' has no such variant", args) == (
        "--variant 'int9': model 'm' has no such variant"
    )
    assert cli_words("layers: 300 entries; allowed at most 256", args).startswith("--layers: ")
    assert cli_words(
        "model: empty, and this server has 2 models and no default model; name one of 'a', 'b' "
        "(or its operator marks one with default_model)",
        args,
    ) == (
        "no --model given, and this server has 2 models and no default model; name one of "
        "'a', 'b' (or its operator starts it with --default-model NAME)"
    )
    # words the CLI has no flag for stay as the server said them
    assert cli_words("sequences[0].input_ids: empty", args) == "sequences[0].input_ids: empty"


def test_a_missing_extra_names_the_pip_command():
    missing = ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
    assert install_hint(missing, "bench") == (
        "needs the module 'matplotlib', part of the [bench] extra: in the bertserve checkout "
        "run: pip install -e '.[bench]'"
    )
    named = ModuleNotFoundError("writing .parquet needs pyarrow: pip install pyarrow", name="x")
    assert install_hint(named, "bulk") == str(named)


def test_bench_peers_without_onnxruntime_says_which_extra_without_a_traceback(tmp_path):
    """Neither bench's raw session nor the server it would start can import onnxruntime:
    bench says, before starting anything, which pip command fixes it. onnxruntime is hidden
    by a package of that name that fails to import, as it does where the extra is not
    installed."""
    hidden = tmp_path / "hidden" / "onnxruntime"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name='onnxruntime')\n"
    )
    (tmp_path / "repo").mkdir()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'hidden'}{os.pathsep}"}
    done = subprocess.run(
        [sys.executable, "-m", "bertserve.client.cli", "bench", "--peers"]
        + ["--repo", str(tmp_path / "repo"), "--model", "minilm", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "needs onnxruntime: pip install -e '.[bench]'" in done.stderr, done.stderr
