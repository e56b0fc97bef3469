"""Triton's perf_analyzer, unchanged, against a live server: with nothing but ``-m minilm``,
with real text from ``--input-data``, at concurrency 1 and 4, and streaming. Each run exits 0
with a throughput above zero, and the server counted exactly the requests perf_analyzer sent
as successes of minilm (a sentence embedding each), and no failure."""

from __future__ import annotations

import json

import grpc
import pytest
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from loadtools import run_perf_analyzer
from servers import scrape, total

TEXTS = [
    "I love Paris",
    "The quick brown fox jumps over the lazy dog.",
    "Load tests should measure what users send.",
    "ok",
]


@pytest.fixture(scope="module")
def stub(live_server):
    with grpc.insecure_channel(live_server.target) as channel:
        yield grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


def counts(stub) -> dict[str, int]:
    """minilm's successes and failures, over its versions, from ModelStatistics."""
    answer = stub.ModelStatistics(v2.ModelStatisticsRequest(name="minilm"), timeout=30)
    return {
        "success": sum(s.inference_stats.success.count for s in answer.model_stats),
        "fail": sum(s.inference_stats.fail.count for s in answer.model_stats),
        "sequences": sum(s.inference_count for s in answer.model_stats),
    }


def failures(live_server) -> float:
    """v2 calls the server answered with any code but OK."""
    samples = scrape(live_server.metrics_url)
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "bertserve_requests_total"
        and dict(labels).get("method") in ("ModelInfer", "ModelStreamInfer")
        and dict(labels).get("code") != "OK"
    )


@pytest.mark.parametrize(
    "case, args",
    [
        ("bare", ()),
        ("text-c1", ("--input-data", "{data}", "--concurrency-range", "1")),
        ("text-c4", ("--input-data", "{data}", "--concurrency-range", "4")),
        ("streaming", ("--input-data", "{data}", "--streaming", "--async")),
    ],
)
def test_perf_analyzer_measures_sentence_embeddings(
    perf_analyzer, live_server, stub, tmp_path, case, args
):
    data = tmp_path / "texts.json"
    data.write_text(json.dumps({"data": [{"TEXT": [text]} for text in TEXTS]}))
    args = tuple(a.format(data=data) for a in args)
    before, failed_before = counts(stub), failures(live_server)
    ok_before = total(
        scrape(live_server.metrics_url), "bertserve_requests_total", method="ModelInfer", code="OK"
    )
    run = run_perf_analyzer(
        perf_analyzer, live_server.target, "minilm", *args, "--request-count", "24", out=tmp_path
    )
    assert run.returncode == 0, run.output + live_server.output()[-3000:]
    (row,) = run.rows
    assert float(row["Inferences/Second"]) > 0, run.output
    after = counts(stub)
    sent = run.request_count
    assert sent >= 24, run.output
    assert after["success"] - before["success"] == sent, run.output
    assert after["sequences"] - before["sequences"] == sent  # one text each
    assert after["fail"] == before["fail"]
    assert failures(live_server) == failed_before
    if case != "streaming":  # ModelStreamInfer counts the stream, ModelStatistics each request
        ok_after = total(
            scrape(live_server.metrics_url),
            "bertserve_requests_total",
            method="ModelInfer",
            code="OK",
        )
        assert ok_after - ok_before == sent
    # the server side perf_analyzer read from ModelStatistics: what we counted
    assert f"Successful request count: {sent}" in run.output
