"""TLS, mutual TLS and bearer tokens on a real ``bertserve serve`` process, with certificates
made here by trustme: each way in that should be refused is refused."""

from __future__ import annotations

import asyncio
import datetime
import logging
import signal
import time
import urllib.error
import urllib.request

import grpc
import pytest
import trustme
from bertserve.client import BertserveError, Client
from bertserve.server.config import ServerConfig
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servers import start_server

PAST = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
EXPIRED = datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and
    the same from a second, unrelated CA; every one written as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    files = {}

    def write(name: str, data: bytes) -> str:
        path = folder / name
        path.write_bytes(data)
        files[name] = path
        return str(path)

    write("ca.pem", ca.cert_pem.bytes())
    write("other-ca.pem", other_ca.cert_pem.bytes())
    for name, cert in {
        "server": ca.issue_cert("127.0.0.1", "localhost"),
        "wrong-name": ca.issue_cert("other.example"),
        "expired": ca.issue_cert("127.0.0.1", not_before=PAST, not_after=EXPIRED),
        "client": ca.issue_cert("client.example"),
        "client-expired": ca.issue_cert("client.example", not_before=PAST, not_after=EXPIRED),
        "client-other-ca": other_ca.issue_cert("client.example"),
    }.items():
        write(f"{name}.pem", b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        write(f"{name}.key", cert.private_key_pem.bytes())
    return files


def credentials(pki, roots: str = "ca.pem", client: str | None = None):
    chain = key = None
    if client:
        chain, key = pki[f"{client}.pem"].read_bytes(), pki[f"{client}.key"].read_bytes()
    return grpc.ssl_channel_credentials(
        root_certificates=pki[roots].read_bytes(), private_key=key, certificate_chain=chain
    )


def embed(channel: grpc.Channel) -> pb.EmbedResponse:
    stub = bertserve_pb2_grpc.BertServiceStub(channel)
    return stub.Embed(pb.EmbedRequest(texts=["I love Paris"]), timeout=30)


def refused(channel: grpc.Channel) -> grpc.StatusCode:
    with channel, pytest.raises(grpc.RpcError) as error:
        embed(channel)
    return error.value.code()


def tls_server(model_repo, pki, cert: str, client_ca: bool = False):
    args = ["--tls-cert", str(pki[f"{cert}.pem"]), "--tls-key", str(pki[f"{cert}.key"])]
    if client_ca:
        args += ["--tls-client-ca", str(pki["ca.pem"])]
    # servers.wait_serving speaks plaintext; the port file says it is loaded and serving
    return start_server(model_repo, *args, metrics=False, wait=False)


def wait_secure(target: str, creds: grpc.ChannelCredentials) -> None:
    end = time.monotonic() + 120
    while True:
        with grpc.secure_channel(target, creds) as channel:
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        assert time.monotonic() < end, "the TLS server never became SERVING"
        time.sleep(0.2)


def test_tls_serves_trusting_clients_and_refuses_every_other(model_repo, pki):
    server = tls_server(model_repo, pki, "server")
    try:
        wait_secure(server.target, credentials(pki))
        with grpc.secure_channel(server.target, credentials(pki)) as channel:
            assert list(embed(channel).lengths) == [5]
        with Client(server.target, tls=str(pki["ca.pem"])) as client:  # the Python client
            assert client.embed("I love Paris").sentence_embedding.shape == (1, 384)
        # plaintext to a TLS port
        assert refused(grpc.insecure_channel(server.target)) == grpc.StatusCode.UNAVAILABLE
        # a client that trusts another CA
        other = grpc.secure_channel(server.target, credentials(pki, "other-ca.pem"))
        assert refused(other) == grpc.StatusCode.UNAVAILABLE
        # the certificate names 127.0.0.1, the client asks for another name
        mismatch = grpc.secure_channel(
            server.target,
            credentials(pki),
            options=[("grpc.ssl_target_name_override", "bertserve.example")],
        )
        assert refused(mismatch) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def test_a_server_certificate_for_another_name_or_expired_is_refused(model_repo, pki):
    for cert in ("wrong-name", "expired"):
        server = tls_server(model_repo, pki, cert)
        try:
            # the port file appears once the models are loaded: it is serving now
            channel = grpc.secure_channel(server.target, credentials(pki))
            assert refused(channel) == grpc.StatusCode.UNAVAILABLE, cert
        finally:
            server.stop()


def test_mutual_tls_needs_a_client_certificate_from_the_ca(model_repo, pki):
    server = tls_server(model_repo, pki, "server", client_ca=True)
    try:
        wait_secure(server.target, credentials(pki, client="client"))
        with grpc.secure_channel(server.target, credentials(pki, client="client")) as channel:
            assert list(embed(channel).lengths) == [5]
        for client in (None, "client-other-ca", "client-expired"):
            channel = grpc.secure_channel(server.target, credentials(pki, client=client))
            assert refused(channel) == grpc.StatusCode.UNAVAILABLE, client
    finally:
        server.stop()


def test_bearer_tokens_health_open_reload_on_sighup_and_never_in_metrics(model_repo, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# comment\nfirst-secret-token\n\nsecond-secret-token\n")
    server = start_server(model_repo, "--auth-token-file", str(tokens))
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = bertserve_pb2_grpc.BertServiceStub(channel)
            request = pb.EmbedRequest(texts=["I love Paris"])
            for metadata, problem in (
                ((), "no authorization metadata"),
                ((("authorization", "Bearer wrong-token"),), "not valid"),
                ((("authorization", "Basic first-secret-token"),), "not 'Bearer <token>'"),
                ((("authorization", "Bearer first-secret-token-x"),), "not valid"),
            ):
                with pytest.raises(grpc.RpcError) as error:
                    stub.Embed(request, timeout=30, metadata=metadata)
                assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert problem in error.value.details()
            for token in ("first-secret-token", "second-secret-token"):
                auth = (("authorization", f"Bearer {token}"),)
                assert list(stub.Embed(request, timeout=30, metadata=auth).lengths) == [5]
            # health answers probes without a token
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        with Client(server.target, token="second-secret-token") as client:
            assert client.embed("I love Paris").sentence_embedding.shape == (1, 384)
        with Client(server.target) as client, pytest.raises(BertserveError) as error:
            client.embed("I love Paris")
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED

        # SIGHUP: the file is read again; the removed token stops working
        tokens.write_text("third-secret-token\n")
        server.process.send_signal(signal.SIGHUP)
        end = time.monotonic() + 30
        while True:
            try:
                with Client(server.target, token="third-secret-token") as client:
                    client.embed("I love Paris")
                break
            except BertserveError as error:
                assert error.code == grpc.StatusCode.UNAUTHENTICATED
                assert time.monotonic() < end, "SIGHUP did not reload the tokens"
                time.sleep(0.1)
        with Client(server.target, token="first-secret-token") as client:
            with pytest.raises(BertserveError) as error:
                client.embed("I love Paris")
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED

        metrics = scrape_text(server.metrics_url, token="third-secret-token")
        assert 'code="UNAUTHENTICATED"' in metrics
        log = server.output()
        for secret in ("first-secret", "second-secret", "third-secret", "wrong-token"):
            assert secret not in metrics and secret not in log
    finally:
        server.stop()


def test_plaintext_beyond_loopback_warns(model_repo, caplog):
    from bertserve.server.app import BertServer

    async def bind(host: str) -> None:
        server = BertServer(ServerConfig(repo=model_repo, host=host, port=0).validate())
        await server.server.stop(None)  # bound, never started: no traffic goes anywhere

    caplog.set_level(logging.WARNING, logger="bertserve.server")
    asyncio.run(bind("127.0.0.1"))
    assert not [r for r in caplog.records if "without TLS" in r.getMessage()]
    asyncio.run(bind("0.0.0.0"))
    (warning,) = [r for r in caplog.records if "without TLS" in r.getMessage()]
    assert "--tls-cert" in warning.getMessage()


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"tls_cert": "cert.pem"}, "give both"),
        ({"tls_client_ca": "ca.pem"}, "mutual TLS needs tls_cert"),
        ({"tls_cert": "nope.pem", "tls_key": "nope.key"}, "no such file"),
        ({"auth_token_file": "nope"}, "auth_token_file='nope': no such file"),
    ],
)
def test_security_settings_are_checked(tmp_path, flags, message):
    from bertserve.server.config_load import load_config

    with pytest.raises(ValueError, match=message):
        load_config({"repo": tmp_path, **flags}, None, {})


def test_tls_settings_come_from_the_environment(tmp_path, pki):
    from bertserve.server.config_load import load_config

    environ = {
        "BERTSERVE_TLS_CERT": str(pki["server.pem"]),
        "BERTSERVE_TLS_KEY": str(pki["server.key"]),
        "BERTSERVE_TLS_CLIENT_CA": str(pki["ca.pem"]),
        "BERTSERVE_AUTH_TOKEN_FILE": str(pki["ca.pem"]),
    }
    config = load_config({"repo": tmp_path}, None, environ)
    assert config.tls_cert == pki["server.pem"] and config.tls_client_ca == pki["ca.pem"]
    yaml_file = tmp_path / "server.yaml"
    yaml_file.write_text(f"tls_cert: {pki['server.pem']}\ntls_key: {pki['server.key']}\n")
    assert load_config({"repo": tmp_path}, yaml_file, {}).tls_key == pki["server.key"]


def scrape_text(url: str, token: str | None = None, context=None) -> str:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(request, timeout=10, context=context).read().decode()


def http_status(url: str, token: str | None = None, context=None) -> int:
    try:
        scrape_text(url, token, context)
    except urllib.error.HTTPError as error:
        return error.code
    return 200


def test_the_metrics_port_needs_the_token_reloaded_on_sighup(model_repo, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("metrics-secret-one\n")
    server = start_server(model_repo, "--auth-token-file", str(tokens), wait=False)
    try:
        url = server.metrics_url
        assert http_status(url) == 401
        assert http_status(url, token="wrong") == 401
        assert http_status(url, token="metrics-secret-one-x") == 401
        assert "bertserve_requests_total" in scrape_text(url, token="metrics-secret-one")
        basic = urllib.request.Request(url, headers={"authorization": "Basic metrics-secret-one"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(basic, timeout=10)
        assert refused.value.code == 401 and b"Bearer <token>" in refused.value.read()
        tokens.write_text("metrics-secret-two\n")
        server.process.send_signal(signal.SIGHUP)
        end = time.monotonic() + 30
        while http_status(url, token="metrics-secret-two") != 200:  # until the reload lands
            assert time.monotonic() < end, "SIGHUP did not reload the metrics tokens"
            time.sleep(0.1)
        assert http_status(url, token="metrics-secret-one") == 401
        assert "metrics-secret" not in server.output()
    finally:
        server.stop()


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_the_metrics_port_speaks_tls_when_grpc_does_and_binds_loopback(model_repo, pki, mutual):
    import http.client
    import ssl

    args = ["--tls-cert", str(pki["server.pem"]), "--tls-key", str(pki["server.key"])]
    if mutual:
        args += ["--tls-client-ca", str(pki["ca.pem"])]
    server = start_server(model_repo, *args, wait=False)
    try:
        https = server.metrics_url.replace("http://", "https://")
        trusting = ssl.create_default_context(cafile=str(pki["ca.pem"]))
        if mutual:  # as gRPC does, the metrics port asks for a client certificate from the CA
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                scrape_text(https, context=trusting)
            trusting.load_cert_chain(str(pki["client.pem"]), str(pki["client.key"]))
        assert "bertserve_requests_total" in scrape_text(https, context=trusting)
        # plain HTTP gets no metrics: the TLS port drops it
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            scrape_text(server.metrics_url)
        # a client that does not trust the CA is refused at the handshake
        untrusting = ssl.create_default_context(cafile=str(pki["other-ca.pem"]))
        with pytest.raises(urllib.error.URLError) as refused:
            scrape_text(https, context=untrusting)
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
        # loopback unless told otherwise
        serving = next(line for line in server.output().splitlines() if '"serving"' in line)
        assert f'"metrics": "127.0.0.1:{server.metrics_port}"' in serving
    finally:
        server.stop()
