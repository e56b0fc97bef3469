"""``bertserve embed-dataset``: a corpus of Parquet, JSONL or text files to Parquet vectors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bertserve.client.cli import HelpFormatter
from bertserve.client.cli_common import (
    add_feature_options,
    add_progress_option,
    long_text_words,
)

EXAMPLES = """\
examples:
  bertserve embed-dataset texts.txt vectors --repo models --model minilm
  bertserve embed-dataset corpus/ vectors --repo models --model minilm --variant int8 --normalize
  bertserve embed-dataset corpus/ vectors --model minilm --target 127.0.0.1:50051
  bertserve embed-dataset docs.jsonl vectors --repo models --model minilm --long-text chunk
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``embed-dataset`` to the ``bertserve`` command."""
    parser = subparsers.add_parser(
        "embed-dataset",
        help="embed a corpus (files or a directory) into Parquet, locally or on Ray",
        description="Embed every row of INPUT (.parquet, .jsonl or .txt files, or a directory "
        "of them) into OUTPUT, a directory of Parquet files (id, vector) with a manifest. "
        "The model runs in-process with the server's own code (or, with --target, on running "
        "servers). Stop it at any time and run the same command again: only what is missing "
        "is computed.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="a file or a directory")
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="a directory (created)")
    parser.add_argument("--repo", type=Path, help="the model repository (<model>/<variant>/)")
    parser.add_argument("--model", required=True, help="model name in the repository")
    parser.add_argument("--variant", default=None, help="fp32, fp32-opt (default), int8, fp16")
    add_feature_options(parser, per_call=False)
    parser.add_argument("--text-column", default="text", help="the text column/field")
    parser.add_argument(
        "--id-column", default=None, help="the id column/field (default: <file>:<row> ids)"
    )
    parser.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="where the embedders run"
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="an existing Ray cluster (auto, ...; default: a local one)",
    )
    parser.add_argument("--actors", type=int, default=1, help="ray: embedders side by side")
    parser.add_argument(
        "--threads-per-actor",
        "--threads",
        type=int,
        default=0,
        dest="threads",
        help="onnxruntime threads of each embedder (ray: also its num_cpus); 0: local: every "
        "CPU, ray: 1",
    )
    parser.add_argument(
        "--target", default=None, help="HOST:PORT,...: call running servers instead of --repo"
    )
    parser.add_argument(
        "--block-rows", type=int, default=4096, help="rows per block (the unit of resuming)"
    )
    add_progress_option(parser, "part of a block")
    parser.set_defaults(run=run, extra="server,ray")


def run(args: argparse.Namespace) -> int:
    from .inputs import InputError
    from .job import RAY_HINT, Job, main_error, root_cause
    from .job import run as run_job
    from .options import FeatureOptions

    try:
        job = Job(
            input=str(args.input),
            output=str(args.output),
            model=args.model,
            repo=str(args.repo) if args.repo else None,
            variant=args.variant,
            options=FeatureOptions.parse(
                pooling=args.pooling,
                layers=args.layers,
                aggregate=args.aggregate,
                normalize=args.normalize,
                dtype=args.dtype,
                truncate=args.truncate,
                **long_text_words(args),
            ),
            text_column=args.text_column,
            id_column=args.id_column,
            block_rows=args.block_rows,
            engine=args.engine,
            target=args.target,
            threads=args.threads,
            actors=args.actors,
            ray_address=args.ray_address,
            progress=args.progress,
        )
        report = run_job(job)
    except KeyboardInterrupt:
        print(
            "\ninterrupted: run the same command again to compute only what is missing",
            file=sys.stderr,
        )
        return 130
    except ModuleNotFoundError as error:
        if error.name != "ray":
            raise  # the bertserve command prints the pip hint
        print(f"bertserve embed-dataset: {RAY_HINT}", file=sys.stderr)
        return 2
    except (InputError, ValueError, OSError) as error:
        print(f"bertserve embed-dataset: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # Ray wraps a worker's error: show the worker's own message
        print(f"bertserve embed-dataset: {main_error(error)}", file=sys.stderr)
        return 2 if isinstance(root_cause(error), ValueError) else 1
    print(
        f"embedded {report['computed_rows']:,} rows ({report['computed_blocks']} blocks) in "
        f"{report['seconds']:.1f} s, {report['rows_per_second'] or 0:,.0f} rows/s; "
        f"{report['skipped_rows']:,} rows were already done; output: {args.output}",
        file=sys.stderr,
    )
    print(json.dumps(report))
    return 0
