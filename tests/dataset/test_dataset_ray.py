"""The Ray engine on a local two-CPU Ray cluster: the server's vectors, every id once, the
``Embedder`` API inside ``map_batches``, and a job that survives one of its actors being
killed mid-job."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from bertserve.dataset import Embedder, Job, read_output, run
from dataset_helpers import assert_matches, server_vectors

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster of two CPUs for this module (the machine is shared)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def ray_job(source: Path, out: Path, repo: Path, **kwargs) -> Job:
    return Job(
        input=str(source),
        output=str(out),
        model="minilm",
        repo=str(repo),
        engine="ray",
        progress=False,
        **kwargs,
    )


def test_ray_engine_gives_the_servers_vectors_and_every_id_once(
    local_ray, corpus_jsonl, texts, reference, model_repo, tmp_path
):
    out = tmp_path / "out"
    report = run(ray_job(corpus_jsonl, out, model_repo, block_rows=250, actors=2, threads=1))
    ids = [f"corpus.jsonl:{line}" for line in range(1, len(texts) + 1)]
    assert_matches(read_output(out), ids, reference)
    assert report["engine"] == "ray" and report["computed_rows"] == len(texts)
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    # a rerun finds every block done
    again = run(ray_job(corpus_jsonl, out, model_repo, block_rows=250, actors=2, threads=1))
    assert again["computed_rows"] == 0 and again["skipped_rows"] == len(texts)


def test_embedder_in_map_batches(local_ray, texts, reference, model_repo):
    rows = [{"text": text, "row": index} for index, text in enumerate(texts[:400])]
    dataset = ray.data.from_items(rows, override_num_blocks=4).map_batches(
        Embedder,
        fn_constructor_kwargs={"repo": str(model_repo), "model": "minilm"},
        concurrency=1,
        num_cpus=2,
        batch_size=100,
    )
    result = dataset.take_all()
    assert sorted(r["row"] for r in result) == list(range(400))  # Ray keeps no order
    got = np.stack([np.asarray(r["vector"]) for r in sorted(result, key=lambda r: r["row"])])
    assert got.shape == (400, 384) and got.dtype == np.float32
    assert float(np.max(np.abs(got - reference[:400]))) <= 1e-5


def test_a_killed_actor_is_restarted_and_the_job_completes(
    local_ray, more_tweets, live_server, model_repo, tmp_path
):
    source = tmp_path / "tweets.txt"
    source.write_text("\n".join(more_tweets) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    job = ray_job(source, out, model_repo, block_rows=40, actors=2, threads=1)
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["report"] = run(job)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = error

    worker = threading.Thread(target=work)
    worker.start()
    markers = out / "_done"
    # markers are written under a hidden temporary name and renamed: look only at real ones
    while worker.is_alive() and not list(markers.glob("*.json")):
        time.sleep(0.02)  # polling: the marker says when an actor has written a block
    first = next(markers.glob("*.json"))
    victim = json.loads(first.read_text())["pid"]
    assert victim != os.getpid()  # an actor's process, not this one
    os.kill(victim, signal.SIGKILL)
    worker.join(timeout=900)
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert report["computed_blocks"] == len(more_tweets) // 40
    # blocks finished after the kill came from actors other than the killed one
    pids = {json.loads(p.read_text())["pid"] for p in markers.glob("*.json")}
    assert len(pids - {victim}) >= 1
    expected = server_vectors(live_server.target, more_tweets)
    ids = [f"tweets.txt:{line}" for line in range(1, len(more_tweets) + 1)]
    assert_matches(read_output(out), ids, expected)
