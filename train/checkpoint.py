"""The work folder of a fine-tuning run: what the run is (``run.json``), where it is
(``state.pt``: weights, optimizer, schedule, random state, progress), the per-epoch checkpoints
and ``best/``; and the signal handling that stops a run where it can resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from bertserve.export import ExportError
from bertserve.export.sources import Source

from .data import Dataset
from .settings import Settings

STATE = "state.pt"
RUN = "run.json"
BEST = "best"


class Interrupted(Exception):
    """Training stopped on a signal; the state is saved and the same command resumes it."""


@dataclass
class Progress:
    """Where training is; saved in state.pt with the weights."""

    epoch: int = 0  # epochs completed
    step: int = 0  # batches done in the current epoch
    seconds: float = 0.0  # training time so far, over every resumption
    rows: int = 0  # training rows seen so far
    best_epoch: int = 0
    best_f1: float = -1.0
    stale: int = 0  # epochs since the best
    finished: bool = False
    history: list[dict] | None = None


@contextmanager
def stop_on_signal() -> Iterator[dict[str, bool]]:
    """The first SIGINT/SIGTERM asks to stop after the current step; a second SIGINT is
    KeyboardInterrupt as usual."""
    flag = {"stop": False}

    def ask(signum: int, _frame: object) -> None:
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = True
        print("\nstopping after this step; the state will be saved", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def save_state(
    work: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: Progress,
) -> None:
    staged = work / f".{STATE}.tmp"
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "progress": asdict(progress),
        },
        staged,
    )
    os.replace(staged, work / STATE)


def load_state(
    work: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> Progress:
    """Restore what :func:`save_state` saved in ``work`` (a new Progress when nothing was)."""
    if not (work / STATE).is_file():
        return Progress(history=[])
    state = torch.load(work / STATE, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    progress = Progress(**state["progress"])
    if not progress.finished:
        print(
            f"resuming {work} at epoch {progress.epoch + 1}, batch {progress.step + 1}",
            file=sys.stderr,
        )
    return progress


def keep_checkpoints(work: Path, latest: Path, best_epoch: int) -> None:
    """Delete every epoch checkpoint but the best and the latest."""
    for old in work.glob("epoch-*"):
        if old.name not in (latest.name, f"epoch-{best_epoch}"):
            shutil.rmtree(old)


def promote_best(work: Path, best_epoch: int) -> None:
    """Copy the best epoch's checkpoint to ``best/`` (once, atomically)."""
    best = work / BEST
    if not best.is_dir():
        staged = work / f".{BEST}.tmp"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(work / f"epoch-{best_epoch}", staged)
        os.replace(staged, best)


def run_identity(source: Source, dataset: Dataset, settings: Settings) -> dict:
    return {
        "base_model": source.label,
        "data_sha256": dataset.sha256,
        "labels": dataset.label_names,
        "settings": asdict(settings),
    }


def prepare_work(work: Path, identity: dict, restart: bool) -> None:
    """Start a run in ``work`` or check that the run there is this one (to resume it)."""
    run_file = work / RUN
    if restart and work.exists():
        shutil.rmtree(work)
    if run_file.is_file():
        recorded = json.loads(run_file.read_text())
        if recorded != identity:
            differ = sorted(k for k in identity if recorded.get(k) != identity[k])
            raise ExportError(
                f"{work} holds a run with another {', '.join(differ)}; pass --restart to "
                "discard it, or --work to train elsewhere"
            )
        return
    work.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(identity, indent=2) + "\n")
