"""The dataset job: plan the blocks, skip those already done, embed the rest in this process or
on Ray, and record the run in the manifest."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from bertserve.client.progress import Progress, wanted

from . import inputs, output
from .engine import ClientEngine, Engine, InProcessEngine, TextError, package_info
from .inputs import Block, InputError
from .options import FeatureOptions

RAY_HINT = "--engine ray needs Ray Data: in the bertserve checkout run: pip install -e '.[ray]'"
BLOCK_ROWS = 4096
# rows embedded at a time when progress is shown: a first figure in seconds, and requests
# big enough for the batcher to sort by length
PART_ROWS = 512


@dataclass(frozen=True)
class Job:
    """Everything one ``embed-dataset`` run needs (picklable: Ray actors get a copy)."""

    input: str
    output: str
    model: str
    repo: str | None = None
    variant: str | None = None
    options: FeatureOptions = field(default_factory=FeatureOptions)
    text_column: str = "text"
    id_column: str | None = None
    block_rows: int = BLOCK_ROWS
    engine: str = "local"  # or "ray"
    target: str | None = None  # host:port,...: call running servers instead of the model
    threads: int = 0  # onnxruntime intra-op threads per engine (0: the CPUs it may use)
    actors: int = 1  # Ray: embedders side by side
    ray_address: str | None = None
    progress: bool | None = None  # None: shown when stderr is a terminal

    def __post_init__(self) -> None:
        if self.engine not in ("local", "ray"):
            raise ValueError(f"--engine {self.engine!r}: allowed local, ray")
        if self.block_rows < 1 or self.actors < 1 or self.threads < 0:
            raise ValueError("--block-rows and --actors must be at least 1, --threads >= 0")
        if not self.target and not self.repo:
            raise ValueError("give --repo (the model runs in-process) or --target (servers)")

    def identity(self, package: dict[str, Any]) -> dict[str, Any]:
        """What the output's rows depend on: a rerun resumes only when all of it matches."""
        return {
            "model": package["model"],
            "variant": package["variant"],
            "checksum": package.get("checksum"),
            "options": self.options.to_dict(),
            "text_column": self.text_column,
            "id_column": self.id_column,
            "block_rows": self.block_rows,
        }


def make_engine(job: Job, threads: int | None = None) -> Engine:
    """The engine a worker embeds with: the model in-process, or the servers of ``target``."""
    if job.target:
        return ClientEngine(job.target, job.model, job.variant, job.options)
    assert job.repo is not None
    return InProcessEngine(
        job.repo, job.model, job.variant, job.threads if threads is None else threads, job.options
    )


class BlockWriter:
    """Embeds whole blocks and writes each one's data file and marker: what one worker (this
    process, or one Ray actor) runs. Ray Data calls it with a batch of block descriptions."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.engine = make_engine(job)

    def write(self, block: Block, on_rows: Callable[[int], None] | None = None) -> int:
        """Embed and write one block; returns its rows. ``on_rows(n)``: told as each part of
        the block is embedded (parts of ``PART_ROWS``), for progress within the block."""
        job = self.job
        started, cpu = time.time(), time.process_time()
        ids, texts = inputs.read(block, job.text_column, job.id_column)
        step = PART_ROWS if on_rows else max(1, len(texts))
        parts: list[dict[str, Any]] = []
        for start in range(0, len(texts), step):
            try:
                parts.append(self.engine.outputs(texts[start : start + step]))
            except TextError as error:
                row = inputs.row_of(block, start + error.index)
                raise InputError(f"{row}: {error.reason}") from None
            if on_rows:
                on_rows(len(texts[start : start + step]))
        features = _joined(parts)
        rows = output.table(ids, features, job.options.dtype)
        marker = {
            "rows": block.rows,
            "input": block.file.fingerprint,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": started,  # seconds since the epoch: the run's steady rate
            "finished_at": time.time(),
            # this process's CPU time (every thread) for the block: a per-core rate that a
            # busy, shared machine does not blur
            "cpu_seconds": round(time.process_time() - cpu, 4),
        }
        output.write_block(Path(job.output), block, rows, marker)
        return block.rows

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Ray Data: a batch of block descriptions (columns of Block.to_dict) -> rows written."""
        keys, rows = [], []
        for position in range(len(batch["index"])):
            block = Block.from_dict({name: values[position] for name, values in batch.items()})
            rows.append(self.write(block))
            keys.append(block.key)
        return {"block": keys, "rows": rows, "pid": [os.getpid()] * len(keys)}

    def close(self) -> None:
        self.engine.close()


def _joined(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The features of a block's parts, in order: arrays stacked, per-text lists joined."""
    if len(parts) == 1:
        return parts[0]
    joined: dict[str, Any] = {}
    for name in parts[0] if parts else ():
        values = [part[name] for part in parts]
        joined[name] = (
            np.concatenate(values) if isinstance(values[0], np.ndarray) else sum(values, [])
        )
    return joined


def plan(job: Job) -> list[Block]:
    """Every block of every input file (reads Parquet metadata and scans text files' lines)."""
    blocks: list[Block] = []
    for file in inputs.discover(Path(job.input)):
        blocks += inputs.plan(file, job.block_rows, job.text_column, job.id_column)
    return blocks


def describe(job: Job) -> dict[str, Any]:
    """The model package the job uses (from the repository, or asked of the servers)."""
    if not job.target:
        assert job.repo is not None
        return package_info(job.repo, job.model, job.variant)
    engine = ClientEngine(job.target, job.model, job.variant, job.options)
    try:
        return {"model": job.model, "variant": engine.variant_name, "checksum": None}
    finally:
        engine.close()


def run(job: Job) -> dict[str, Any]:
    """Run ``job`` to completion; returns this run's report (also appended to the manifest's
    ``runs``): rows and blocks computed now and skipped as already done."""
    started = time.monotonic()
    package = describe(job)
    blocks = plan(job)
    out = Path(job.output)
    identity = job.identity(package)
    manifest = output.read_manifest(out)
    if manifest is not None and manifest.get("job") != identity:
        old = manifest.get("job") or {}
        differ = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        raise ValueError(
            f"{out} holds the output of another job (it differs in {', '.join(differ)}); "
            "give a new OUTPUT directory, or delete this one to start over"
        )
    if manifest is None:
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"{out}: not empty and not a bertserve dataset output; give a new one")
        manifest = {"format": output.FORMAT, "job": identity, "package": package, "runs": []}
    for stale in out.rglob(".*.tmp-*"):  # left by a run that died mid-write: never trusted
        stale.unlink(missing_ok=True)
    manifest.update(complete=False, input=str(Path(job.input).resolve()))
    output.write_manifest(out, manifest)
    todo = [block for block in blocks if output.done(out, block) is None]
    total = sum(block.rows for block in blocks)
    todo_rows = sum(block.rows for block in todo)
    if job.engine == "ray":
        workers = _run_ray(job, todo)
    else:
        workers = _run_local(job, todo, total, total - todo_rows)
    missing = [block.key for block in blocks if output.done(out, block) is None]
    if missing:
        raise RuntimeError(f"blocks without a completion marker after the run: {missing[:5]}")
    seconds = time.monotonic() - started
    markers = [output.done(out, block) or {} for block in todo]
    # from the first block's start to the last one's end: without planning, model loading
    # and Ray's start-up, which a long job amortises
    span = max((m["finished_at"] for m in markers), default=0) - min(
        (m["started_at"] for m in markers), default=0
    )
    cpu_seconds = sum(m.get("cpu_seconds", 0.0) for m in markers)
    report = {
        "engine": "target" if job.target else job.engine,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "computed_rows": todo_rows,
        "computed_blocks": len(todo),
        "skipped_rows": total - todo_rows,
        "skipped_blocks": len(blocks) - len(todo),
        "seconds": round(seconds, 3),
        "rows_per_second": round(todo_rows / seconds, 1) if seconds > 0 else None,
        "steady_rows_per_second": round(todo_rows / span, 1) if span > 0 else None,
        "cpu_seconds": round(cpu_seconds, 3),
        "rows_per_cpu_second": round(todo_rows / cpu_seconds, 1) if cpu_seconds > 0 else None,
        "actors": job.actors if job.engine == "ray" else 1,
        "threads": job.threads,
        "workers": workers,
    }
    manifest.update(
        complete=True,
        rows=total,
        blocks=len(blocks),
        files=sorted({block.file.name for block in blocks}),
    )
    manifest["runs"].append(report)
    output.write_manifest(out, manifest)
    return report


def _run_local(job: Job, todo: list[Block], total: int, done: int) -> list[int]:
    if not todo:
        return []
    writer = BlockWriter(job)
    progress = Progress(total, done) if wanted(job.progress) else None
    try:
        for block in todo:
            writer.write(block, progress.update if progress else None)
        if progress:
            progress.update(0, final=True)
    finally:
        writer.close()
    return [os.getpid()]


def _run_ray(job: Job, todo: list[Block]) -> list[int]:
    """One BlockWriter per actor (``actors`` of them, ``threads`` CPUs each), one block per
    call; Ray restarts an actor that dies and retries its block (the write is idempotent)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ModuleNotFoundError(RAY_HINT, name="ray") from None
    if not ray.is_initialized():
        ray.init(address=job.ray_address, include_dashboard=False, log_to_driver=False)
    if not todo:
        return []
    threads = job.threads or 1
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = wanted(job.progress)
    items = [block.to_dict() for block in todo]
    results = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map_batches(
            BlockWriter,
            fn_constructor_kwargs={"job": replace(job, threads=threads, progress=False)},
            batch_size=1,
            concurrency=job.actors,
            num_cpus=threads,
        )
        .take_all()
    )
    written = {row["block"] for row in results}
    expected = {block.key for block in todo}
    if written != expected:
        raise RuntimeError(f"Ray returned {len(written)} of {len(expected)} blocks")
    return sorted({int(row["pid"]) for row in results})


def root_cause(error: BaseException) -> BaseException:
    """The innermost cause (Ray wraps a worker's exception in its own, ``.cause``)."""
    for _ in range(20):
        inner = getattr(error, "cause", None) or error.__cause__
        if inner is None or inner is error:
            break
        error = inner
    return error


def main_error(error: BaseException) -> str:
    """The message a user sees for a job's failure: a bad input's own words."""
    cause = root_cause(error)
    if isinstance(cause, ValueError):
        return str(cause)
    return f"{type(error).__name__}: {error}"
