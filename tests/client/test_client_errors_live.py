"""Each improved error message against a real server (issue 18): no server, TLS one way and
the other, a missing or refused token, a deadline, a too-long text; the Python client keeps
the gRPC code and adds what fixes it in its arguments, the CLI names its flags."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import grpc
import pytest
import trustme
from bertserve.client import AsyncClient, BertserveError, Client
from servers import free_port, start_server

CLI = [sys.executable, "-m", "bertserve.client.cli"]
TOKEN = "a-secret-token"


def cli(*args: str, **env: str) -> str:
    """The CLI's stderr for a call that must fail (exit status 2), with no traceback."""
    done = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


def python_error(target: str, **client) -> BertserveError:
    with Client(target, timeout=60, **client) as python, pytest.raises(BertserveError) as error:
        python.embed("I love Paris")
    return error.value


@pytest.fixture(scope="module")
def secure_server(model_repo, tmp_path_factory):
    """TLS with a certificate for 127.0.0.1 from a CA made here, and a bearer token."""
    folder = tmp_path_factory.mktemp("secure")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    files["ca"].write_bytes(ca.cert_pem.bytes())
    files["cert"].write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    files["key"].write_bytes(cert.private_key_pem.bytes())
    (folder / "tokens").write_text(TOKEN + "\n")
    server = start_server(
        model_repo,
        *("--tls-cert", str(files["cert"]), "--tls-key", str(files["key"])),
        *("--auth-token-file", str(folder / "tokens"), "--no-warmup"),
        metrics=False,
        wait=False,  # the port file says it is loaded; wait_serving speaks plaintext
    )
    with Client(server.target, tls=str(files["ca"]), token=TOKEN, timeout=60) as client:
        assert client.health() == "SERVING"
    yield server, str(files["ca"])
    server.stop()


def test_no_server_says_how_to_start_one_or_where_to_point():
    target = f"127.0.0.1:{free_port()}"
    error = python_error(target)
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.problem == "no_server"
    assert str(error).startswith(
        f"UNAVAILABLE: no bertserve server answered at {target}: is one running? start one "
        "with `bertserve serve --repo models` (or `./dev serve`), or pass target='HOST:PORT'"
    )
    message = cli("embed", "I love Paris", "--target", target)
    assert f"bertserve: no bertserve server answered at {target}: is one running?" in message
    assert "or pass --target HOST:PORT" in message
    # the default target, from the environment, is named the same way
    assert f"answered at {target}" in cli("info", BERTSERVE_TARGET=target)
    # the asyncio client says the same
    with pytest.raises(BertserveError) as caught:
        asyncio.run(async_embed(target))
    assert caught.value.problem == "no_server" and "target='HOST:PORT'" in str(caught.value)


async def async_embed(target: str) -> None:
    async with AsyncClient(target, timeout=60) as client:
        await client.embed("I love Paris")


def test_plaintext_against_tls_and_tls_against_plaintext(secure_server, live_server):
    server, ca = secure_server
    error = python_error(server.target, token=TOKEN)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert "it probably serves TLS (started with --tls-cert); pass tls='CA.pem'" in str(error)
    message = cli("embed", "x", "--target", server.target, "--token", TOKEN)
    assert "probably serves TLS (started with --tls-cert); pass --tls CA.pem" in message
    # TLS trusting the system's roots, not the CA that signed the server's certificate
    message = cli("embed", "x", "--target", server.target, "--tls", "system", "--token", TOKEN)
    assert "is not signed by a CA this client trusts: pass --tls CA.pem" in message
    # TLS to a plaintext server
    error = python_error(live_server.target, tls=ca)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert "speaks plaintext, not TLS: leave tls unset" in str(error)
    message = cli("embed", "x", "--target", live_server.target, "--tls", ca)
    assert f"the server at {live_server.target} speaks plaintext, not TLS: drop --tls" in message


def test_a_missing_or_refused_token_names_the_flag(secure_server):
    server, ca = secure_server
    error = python_error(server.target, tls=ca)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert "requires a bearer token: pass token='...'" in str(error)
    assert "no authorization metadata" in error.details  # the server's words stay
    message = cli("embed", "x", "--target", server.target, "--tls", ca, BERTSERVE_TOKEN="")
    assert "requires a bearer token: pass --token TOKEN (or set $BERTSERVE_TOKEN)" in message
    error = python_error(server.target, tls=ca, token="wrong")
    assert "refused this bearer token: check token='...'" in str(error)
    message = cli("embed", "x", "--target", server.target, "--tls", ca, BERTSERVE_TOKEN="wrong")
    assert "refused this bearer token: check --token TOKEN (or set $BERTSERVE_TOKEN)" in message
    with Client(server.target, tls=ca, token=TOKEN, timeout=60) as client:
        assert client.embed("I love Paris").sentence_embedding.shape == (1, 384)


def test_a_deadline_names_the_timeout(live_server):
    # a microsecond: no answer can come back in time
    with Client(live_server.target, timeout=1e-6) as client, pytest.raises(BertserveError) as e:
        client.embed("I love Paris")
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "within the timeout: pass a longer timeout= (seconds)" in str(e.value)
    message = cli("embed", "x", "--target", live_server.target, "--timeout", "0.000001")
    assert "within 1e-06 s: pass a longer --timeout SECONDS" in message


def test_a_too_long_text_names_the_cli_flag_not_the_proto_field(live_server):
    long_text = "word " * 1000
    with Client(live_server.target, timeout=60) as client, pytest.raises(BertserveError) as e:
        client.embed(["short", long_text])
    # the Python client keeps the server's (protocol's) words
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details.startswith("texts[1]: ") and "truncate=true" in e.value.details
    for command in ("embed", "tokenize"):
        message = cli(command, "short", long_text, "--target", live_server.target)
        assert message.startswith("bertserve: INVALID_ARGUMENT: text 2: "), message
        assert "longer than the model's limit of" in message
        assert "shorten it or pass --truncate" in message and "truncate=true" not in message
