"""Faults on real ``bertserve serve`` processes: callers that cancel or time out, a client
that vanishes mid-stream, SIGTERM under load and mid-stream, an inference failure, damaged
packages, a reader that stops reading, idle streams under keepalive, connection age.

(SIGKILL of one of three replicas under the round-robin client is
tests/client/test_client_replicas.py.)
"""

from __future__ import annotations

import asyncio
import gc
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from bertserve.client import AsyncClient, Client
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scenarios import baseline, gauges, settled, text
from servers import link_package, rss_bytes, scrape, start_server, total


def stub_for(target: str, **options) -> tuple[grpc.Channel, bertserve_pb2_grpc.BertServiceStub]:
    channel = grpc.insecure_channel(target, options=list(options.items()))
    return channel, bertserve_pb2_grpc.BertServiceStub(channel)


def test_a_client_that_vanishes_mid_stream_costs_nothing(model_repo, figures):
    server = start_server(model_repo)
    try:
        at_rest = baseline(server)
        # a process that sends 30 requests on one stream, reads nothing, and is killed
        script = f"""
import grpc, sys, time
from bertserve.v1 import bertserve_pb2 as pb, bertserve_pb2_grpc
channel = grpc.insecure_channel({server.target!r})
stub = bertserve_pb2_grpc.BertServiceStub(channel)
requests = (pb.EmbedRequest(id=str(i), texts=["paris " * 50] * 8, token_embeddings=True)
            for i in range(30))
call = stub.EmbedStream(requests)
print("sent", flush=True)
time.sleep(600)
"""
        victim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert victim.stdout.readline().strip() == "sent"
        end = time.monotonic() + 60
        while gauges(server)["in_flight"] < 1:
            assert time.monotonic() < end
            time.sleep(0.05)
        time.sleep(1.0)  # some answers computed and waiting to be read
        victim.kill()
        victim.wait()
        now = settled(server, at_rest)
        with Client(server.target) as client:
            assert client.embed(["I love Paris"]).lengths.tolist() == [5]
        figures["vanished_stream_client"] = {"requests_sent": 30, "gauges_after": now}
    finally:
        server.stop()


def test_sigterm_with_200_in_flight_loses_none_and_health_turns_first(model_repo, figures):
    # one sequence a batch: the work drains slowly enough to hold 200 calls in flight
    server = start_server(model_repo, "--grace-period", "300", "--max-batch-size", "1")
    batches = [[text(i + k, 8) + " " + "rome " * 10 for k in range(8)] for i in range(215)]
    states: list[tuple[float, str]] = []
    refused: list[tuple[float, grpc.StatusCode]] = []
    health_at_refusal: list[int] = []
    try:
        with Client(server.target) as client:
            expected = client.embed([t for b in batches[:5] for t in b]).sentence_embedding
        # one health watch, opened before the signal, records when NOT_SERVING comes
        watch_channel = grpc.insecure_channel(server.target)
        watch = health_pb2_grpc.HealthStub(watch_channel).Watch(health_pb2.HealthCheckRequest())

        def watching() -> None:
            try:
                for update in watch:
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(update.status)
                    states.append((time.monotonic(), status))
            except grpc.RpcError:
                pass

        watcher = threading.Thread(target=watching, daemon=True)
        watcher.start()

        async def scenario():
            async with AsyncClient(server.target, timeout=600) as client:
                before = total(scrape(server.metrics_url), "bertserve_requests_total")
                tasks = [asyncio.ensure_future(client.embed(b)) for b in batches]
                end = time.monotonic() + 120
                while True:  # until every call has reached the servicer: in flight or done
                    samples = scrape(server.metrics_url)
                    done = total(samples, "bertserve_requests_total") - before
                    in_flight = total(samples, "bertserve_in_flight_requests")
                    if done + in_flight == len(batches):
                        break
                    assert time.monotonic() < end
                    await asyncio.sleep(0.01)
                server.process.send_signal(signal.SIGTERM)
                # new calls during the drain are refused
                probe_channel, probe = stub_for(server.target, **{"grpc.enable_retries": 0})
                health_probe = health_pb2_grpc.HealthStub(probe_channel)
                while not all(t.done() for t in tasks):
                    try:
                        probe.ModelInfo(pb.ModelInfoRequest(), timeout=5)
                    except grpc.RpcError as error:
                        refused.append((time.monotonic(), error.code()))
                        if len(refused) == 1:  # health had already turned when it refused
                            health_at_refusal.append(
                                health_probe.Check(
                                    health_pb2.HealthCheckRequest(), timeout=5
                                ).status
                            )
                    await asyncio.sleep(0.05)
                return in_flight, await asyncio.gather(*tasks, return_exceptions=True)

        in_flight, results = asyncio.run(scenario())
        watch.cancel()  # an open Watch is a call in flight: the drain would wait for it
        assert server.process.wait(120) == 0
        watch_channel.close()
    finally:
        server.stop()
    log = server.output()
    assert '"message": "draining"' in log and '"message": "stopped"' in log
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]
    np.testing.assert_allclose(
        np.concatenate([r.sentence_embedding for r in results[:5]]), expected, atol=1e-5
    )
    assert in_flight >= 200 and [len(r) for r in results] == [8] * len(batches)
    assert refused and {code for _, code in refused} == {grpc.StatusCode.UNAVAILABLE}
    assert health_at_refusal == [health_pb2.HealthCheckResponse.NOT_SERVING]
    assert "NOT_SERVING" in [status for _, status in states]  # and watchers were told
    figures["sigterm_under_load"] = {
        "in_flight_at_sigterm": in_flight,
        "answered": len(results) - len(failures),
        "lost": len(failures),
        "new_calls_refused_unavailable": len(refused),
        "health_not_serving_before_first_refusal": True,
    }


def test_sigterm_mid_stream_moves_the_rest_to_another_replica(model_repo, figures):
    replicas = [start_server(model_repo, "--grace-period", "30") for _ in range(2)]
    batches = [[text(i * 4 + k) + " " + "london " * 30 for k in range(8)] for i in range(40)]
    try:
        target = "ipv4:" + ",".join(r.target for r in replicas)
        results, stopped = [], None
        # one variant named: each replica picks its default by measuring int8 at load
        with Client(target, variant="fp32-opt") as client:
            for result in client.embed_stream(batches, window=8, errors="return"):
                results.append(result)
                if len(results) == 5:
                    # the replica serving this stream drains
                    serving = [r for r in replicas if gauges(r)["in_flight"] >= 1]
                    stopped = serving[0]
                    stopped.process.send_signal(signal.SIGTERM)
        assert stopped is not None and stopped.process.wait(60) == 0
        other = next(r for r in replicas if r is not stopped)
        with Client(other.target, variant="fp32-opt") as client:
            expected = client.embed([t for b in batches for t in b]).sentence_embedding
    finally:
        for replica in replicas:
            replica.stop()
    failed = [r for r in results if isinstance(r, Exception)]
    assert not failed, failed[:3]
    got = np.concatenate([r.sentence_embedding for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)  # all 40, in order, none twice
    figures["sigterm_mid_stream"] = {"items": len(batches), "failed": len(failed)}


def test_an_inference_failure_fails_only_its_batch(model_repo, figures):
    from bertserve.server.app import create_server
    from bertserve.server.config import BatchSettings, ServerConfig

    async def scenario():
        config = ServerConfig(repo=model_repo, port=0, batch=BatchSettings(max_batch_size=4))
        server, port = await create_server(config.validate())
        poisoned = 4242  # a token id no other request uses

        def failing(run):
            def failing_run(input_ids, *args, **kwargs):
                if (input_ids == poisoned).any():
                    raise RuntimeError("injected onnxruntime failure")
                return run(input_ids, *args, **kwargs)

            return failing_run

        for variant in server.registry.loaded.values():
            variant.runtime.run = failing(variant.runtime.run)
        try:
            async with AsyncClient(f"127.0.0.1:{port}") as client:
                good = [client.embed([text(i)]) for i in range(12)]
                bad = client.embed([[101, poisoned, 102]])
                outcome = await asyncio.gather(bad, *good, return_exceptions=True)
                after = await client.embed([text(0)])
        finally:
            await server.stop(1)
            del server, variant
            gc.collect()  # the aio server must go while its event loop is still open
        return outcome, after

    outcome, after = asyncio.run(scenario())
    assert getattr(outcome[0], "code", None) == grpc.StatusCode.INTERNAL
    assert "injected onnxruntime failure" in outcome[0].details
    # neighbours in the same batch share its fate; every other caller is answered, and the
    # batcher lives on
    fates = [type(r).__name__ for r in outcome[1:]]
    assert after.lengths.tolist() == [6]
    assert fates.count("EmbedResult") >= 12 - 3, fates
    figures["inference_failure"] = {
        "failed_with_batch": fates.count("BertserveError"),
        "answered": fates.count("EmbedResult"),
        "batcher_alive_after": True,
    }


def test_damaged_packages_are_refused_while_the_others_serve(model_repo, tmp_path, figures):
    source = model_repo / "minilm" / "fp32"
    repo = tmp_path / "repo"
    for name in ("altered", "good", "half", "truncated"):
        link_package(source, repo / name / "fp32")
    onnx = source / "model.onnx"
    (repo / "truncated/fp32/model.onnx").unlink()
    (repo / "truncated/fp32/model.onnx").write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    altered = bytearray(onnx.read_bytes())
    altered[len(altered) // 2] ^= 0xFF
    (repo / "altered/fp32/model.onnx").unlink()
    (repo / "altered/fp32/model.onnx").write_bytes(bytes(altered))
    (repo / "half/fp32/manifest.json").unlink()
    (repo / "half/fp32/manifest.json").write_text('{"format": "bertserve-model/1", "num_l')

    server = start_server(repo)
    try:
        _, stub = stub_for(server.target)
        request = pb.EmbedRequest(texts=["I love Paris"])
        good = pb.EmbedRequest(model="good", texts=["I love Paris"])
        assert stub.Embed(good, timeout=60).lengths == [5]
        # several models and no default_model: a request naming none is refused, never sent
        # to whichever loaded first (issue 18)
        with pytest.raises(grpc.RpcError) as error:
            stub.Embed(request, timeout=60)
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "name one of 'good'" in error.value.details(), error.value.details()
        messages = {}
        for name, expected in (
            ("truncated", "truncated or half-written"),
            ("altered", "does not match its sha256"),
            ("half", "manifest.json cannot be read"),
        ):
            with pytest.raises(grpc.RpcError) as error:
                stub.Embed(pb.EmbedRequest(model=name, texts=["x"]), timeout=60)
            assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, name
            assert expected in error.value.details(), error.value.details()
            messages[name] = error.value.details()
        names = [m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=60).models]
        assert "good" in names
        assert server.output().count("model refused") >= 2
    finally:
        server.stop()
    figures["damaged_packages"] = {"refused": sorted(messages), "served": ["good"]}
    # a repository where nothing can load is a startup error, not a server that serves nothing
    shutil.rmtree(repo / "good")
    shutil.rmtree(repo / "half")
    failed = subprocess.run(
        [sys.executable, "-m", "bertserve.client.cli", "serve", "--repo", str(repo), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 2 and "no model could be loaded" in failed.stderr


def test_a_reader_that_stops_reading_holds_bounded_memory(model_repo, figures):
    buffer_mib = 16
    server = start_server(
        model_repo,
        *("--stream-buffer-bytes", str(buffer_mib << 20), "--max-answer-bytes", str(8 << 20)),
    )
    try:
        at_rest = baseline(server)
        rss_before = rss_bytes(server.process.pid)
        # 60 requests of 4.7 MiB answers each (281 MiB if all were held); never read:
        # 4 sequences x 100 tokens x (7 hidden states + token embeddings) x 384 x 4 bytes
        request = dict(texts=[" ".join(["rome"] * 98)] * 4, token_embeddings=True, all_layers=True)
        channel, stub = stub_for(server.target)
        feed: queue.Queue = queue.Queue()
        call = stub.EmbedStream(iter(feed.get, None))
        for i in range(60):
            feed.put(pb.EmbedRequest(id=str(i), **request))
        peak_rss = peak_buffered = 0
        end = time.monotonic() + 20
        with Client(server.target) as neighbour:
            expected = neighbour.embed(["I love Paris"]).sentence_embedding
            while time.monotonic() < end:
                now = gauges(server)
                peak_buffered = max(peak_buffered, now["stream_buffered"])
                peak_rss = max(peak_rss, rss_bytes(server.process.pid))
                # another caller meanwhile: answered, and right
                got = neighbour.embed(["I love Paris"]).sentence_embedding
                np.testing.assert_allclose(got, expected, atol=1e-6)
                time.sleep(0.2)
        call.cancel()
        feed.put(None)
        channel.close()
        settled(server, at_rest)
    finally:
        server.stop()
    growth = (peak_rss - rss_before) / 2**20
    assert peak_buffered <= buffer_mib << 20
    # holding every unread answer would take 281 MiB before any copy; what remains is the
    # buffer plus the batches being computed (outputs of every layer) and allocator slack
    assert growth < 200, f"RSS grew {growth:.0f} MiB with a reader that stopped"
    figures["slow_reader"] = {
        "unread_answers_asked_mib": 281,
        "stream_buffer_mib": buffer_mib,
        "peak_buffered_mib": round(peak_buffered / 2**20, 1),
        "peak_rss_growth_mib": round(growth, 1),
    }


def idle_stream(target: str, idle_s: float) -> str:
    """One answer, ``idle_s`` of silence with keepalive pings every second, one more answer."""
    channel = grpc.insecure_channel(
        target,
        options=[
            ("grpc.keepalive_time_ms", 1000),
            ("grpc.keepalive_timeout_ms", 5000),
            ("grpc.http2.max_pings_without_data", 0),  # pings as often as keepalive says
        ],
    )
    feed: queue.Queue = queue.Queue()
    call = bertserve_pb2_grpc.BertServiceStub(channel).EmbedStream(iter(feed.get, None))
    try:
        feed.put(pb.EmbedRequest(id="before", texts=["I love Paris"]))
        next(call)
        time.sleep(idle_s)
        feed.put(pb.EmbedRequest(id="after", texts=["I love Paris"]))
        return next(call).id
    except grpc.RpcError as error:
        return f"{error.code().name}: {error.details()}"
    finally:
        feed.put(None)
        channel.close()


def test_idle_streams_survive_keepalive_pings(model_repo, figures):
    # the server's policy scaled down 20x: the client pings every 30 s, the server accepts
    # every 10 s; here every 1 s against 0.5 s
    server = start_server(model_repo, "--keepalive-min-ping-interval", "0.5")
    strict = start_server(model_repo, "--keepalive-min-ping-interval", "300")  # gRPC's default
    try:
        survived = idle_stream(server.target, 6)
        control = idle_stream(strict.target, 6)
    finally:
        server.stop()
        strict.stop()
    assert survived == "after"
    # the same stream against gRPC's default policy dies: the test can tell
    assert control.startswith("UNAVAILABLE") and "ping" in control.lower(), control
    figures["idle_keepalive_stream"] = {"idle_s": 6, "pings_every_s": 1, "survived": True}


def test_connection_age_moves_clients_without_losing_work(model_repo, figures):
    server = start_server(
        model_repo, "--max-connection-age", "1", "--max-connection-age-grace", "0.5"
    )
    try:
        with Client(server.target) as client:
            expected = client.embed([text(i) for i in range(30)]).sentence_embedding

            def slow_batches():
                for i in range(30):
                    time.sleep(0.15)  # the stream outlives the connection's age and grace
                    yield [text(i)]

            streamed = list(client.embed_stream(slow_batches(), window=2))
            unary = []
            end = time.monotonic() + 3
            while time.monotonic() < end:
                unary.append(client.embed([text(len(unary) % 30)]).sentence_embedding[0])
    finally:
        server.stop()
    np.testing.assert_allclose(
        np.concatenate([r.sentence_embedding for r in streamed]), expected, atol=1e-5
    )
    np.testing.assert_allclose(np.stack(unary), expected[np.arange(len(unary)) % 30], atol=1e-5)
    figures["connection_age"] = {
        "max_age_s": 1,
        "stream_items": 30,
        "unary_calls": len(unary),
        "lost": 0,
    }
