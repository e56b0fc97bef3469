"""`bertserve export`: arguments only here; torch is imported when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bertserve.client.cli import HelpFormatter
from bertserve.variants import CONFIGS, DEFAULT_VARIANTS, VARIANTS

EXAMPLES = """\
examples:
  bertserve export minilm --repo models
  bertserve export minilm --repo models --variants fp32,fp32-opt,int8 --force
  bertserve export --config bert-base --repo models --name bert-base-random
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` sub-command."""
    parser = subparsers.add_parser(
        "export",
        help="export a BERT checkpoint to a validated ONNX model package",
        description="Export a BERT checkpoint to <repo>/<name>/<variant>/ (model.onnx with every "
        "hidden state, tokenizer, manifest.json), validated against PyTorch.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "model",
        nargs="?",
        help="a local Hugging Face BERT folder, 'minilm' (the bundled all-MiniLM-L6-v2), "
        "or a hub name already in the local cache",
    )
    parser.add_argument("--repo", type=Path, required=True, help="the model repository folder")
    parser.add_argument("--name", help="model name in the repository (default: from the source)")
    parser.add_argument(
        "--config",
        choices=CONFIGS,
        help="instead of MODEL: a RANDOMLY initialised model of Google's shape (for cost)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, from {','.join(VARIANTS)} (default: %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="replace packages that exist")
    parser.add_argument("--no-progress", action="store_true", help="no step lines or table")
    parser.set_defaults(run=run, extra="export")


def run(args: argparse.Namespace) -> int:
    """Export; user errors print one line and exit 1."""
    from bertserve.export import ExportError, export_model

    try:
        written = export_model(
            args.model,
            repo=args.repo,
            name=args.name,
            config=args.config,
            variants=args.variants.split(","),
            force=args.force,
            progress=not args.no_progress,
        )
    except ExportError as exc:
        print(f"bertserve export: {exc}", file=sys.stderr)
        return 1
    for folder in written:
        print(folder)
    return 0
