"""What the client's sub-commands (and ``embed-dataset``) share: the connection options, the
feature options, and running a command with its errors as one line on stderr."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from bertserve.variants import VARIANTS

POOLINGS = ("cls", "pooler", "mean", "max", "none")
AGGREGATIONS = ("last", "concat_last_4", "sum_last_4", "mean_all")
DTYPES = ("float32", "float16", "bfloat16")
LONG_TEXTS = ("truncate", "error", "chunk")
CHUNK_POOLINGS = ("mean", "max", "first")


def examples(*commands: str) -> str:
    """An epilog of example command lines, kept as written by HelpFormatter."""
    return "examples:\n" + "".join(f"  {command}\n" for command in commands)


def add_connection(
    parser: argparse.ArgumentParser, *, variant: bool = False, model: bool = True
) -> None:
    """--target, --model, --variant, --timeout, --tls and --token."""
    parser.add_argument(
        "--target",
        default=None,
        help="host:port, host1:port,host2:port or dns:///name:port "
        "(default: $BERTSERVE_TARGET or 127.0.0.1:50051)",
    )
    if model:
        parser.add_argument("--model", default=None, help="model name (default: the server's)")
    if variant:
        parser.add_argument(
            "--variant",
            default=None,
            help=f"one of {', '.join(VARIANTS)} (default: the model's default on the server)",
        )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    parser.add_argument(
        "--tls",
        default=None,
        metavar="ROOTS.pem|system",
        help="use TLS, trusting ROOTS.pem or the system's roots (default: plaintext)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("BERTSERVE_TOKEN"),
        help="bearer token (default: $BERTSERVE_TOKEN)",
    )


def add_feature_options(parser: argparse.ArgumentParser, *, per_call: bool) -> None:
    """What is computed for each text: pooling, layers, aggregate, normalize, dtype, truncate
    and the long-text options. ``per_call``: also the outputs that belong to one call's
    answer rather than to a row of vectors (--tokens, --return-chunks, --split, --span)."""
    # So that `--layers -1,-2` reads as a value, not as an unknown option.
    parser._negative_number_matcher = re.compile(r"^-\d+(,\s*-?\d+)*$")
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        help="how tokens become the sentence vector (default: the model's, see `info`)",
    )
    parser.add_argument("--layers", default=None, help="hidden states: all, or indices like -1,-2")
    if per_call:
        parser.add_argument("--tokens", action="store_true", help="also return token embeddings")
    parser.add_argument(
        "--aggregate",
        choices=AGGREGATIONS,
        default=None,
        help="hidden states combined into the token vectors (default: last)",
    )
    parser.add_argument("--normalize", action="store_true", help="L2-normalise sentence vectors")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="of vectors")
    parser.add_argument("--truncate", action="store_true", help="cut texts over the model's limit")
    long = parser.add_argument_group(
        "long texts",
        "A text over the model's window (`info` shows it) is cut, refused or embedded in "
        "overlapping windows whose vectors are pooled into the text's.",
    )
    long.add_argument(
        "--long-text",
        choices=LONG_TEXTS,
        default=None,
        help="a text over the window: cut it (truncate), refuse it (error), or embed it in "
        "windows (chunk) (default: truncate with --truncate, else error)",
    )
    long.add_argument(
        "--chunk-tokens",
        type=int,
        default=None,
        metavar="N",
        help="chunk: content tokens per window (default: the largest, the model's max length "
        "minus [CLS] and [SEP])",
    )
    long.add_argument(
        "--chunk-overlap",
        type=int,
        default=None,
        metavar="N",
        help="chunk: tokens consecutive windows share, 0 to N-1 (default: an eighth of the window)",
    )
    long.add_argument(
        "--chunk-pooling",
        choices=CHUNK_POOLINGS,
        default=None,
        help="chunk: the windows' vectors pooled into the text's: mean (weighted by each "
        "window's tokens), max or first (default: mean)",
    )
    if not per_call:
        return
    long.add_argument(
        "--return-chunks",
        action="store_true",
        help="chunk: also each window's vector and the characters it covers "
        "(chunk_embeddings, chunk_spans)",
    )
    long.add_argument(
        "--split",
        choices=("sentences",),
        default=None,
        help="late chunking: one vector per sentence, pooled from the token vectors of the "
        "whole text (span_embeddings, span_offsets) (default: no spans)",
    )
    long.add_argument(
        "--span",
        action="append",
        type=_span,
        default=None,
        metavar="[TEXT:]START:END",
        help="late chunking: one vector for characters START..END-1 of the first text (or of "
        "text TEXT); repeat for more",
    )


def add_progress_option(parser: argparse.ArgumentParser, first: str, prefix: str = "") -> None:
    """``--progress/--no-progress``: rows, rows/s and ETA on stderr from the ``first`` unit of
    work (``client.progress.wanted`` reads it)."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"{prefix}rows, rows/s and ETA on stderr from the first {first} (default: only "
        "when stderr is a terminal; --progress in a log, --no-progress never)",
    )


def _span(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(x) for x in value.split(":"))
    except ValueError:
        numbers = ()
    if len(numbers) not in (2, 3):
        raise argparse.ArgumentTypeError(
            f"{value!r}: use START:END or TEXT:START:END (character offsets)"
        )
    return numbers


def long_text_words(args: argparse.Namespace) -> dict[str, Any]:
    """The long-text keywords (``EmbedOptions.parse``'s) of parsed feature options."""
    words = {
        "long_text": args.long_text,
        "chunk_tokens": args.chunk_tokens,
        "chunk_overlap": args.chunk_overlap,
        "chunk_pooling": args.chunk_pooling,
    }
    if getattr(args, "return_chunks", False):
        words["return_chunks"] = True
    if getattr(args, "split", None):
        words["split"] = args.split
    if getattr(args, "span", None):
        words["spans"] = args.span
    return words


def make_client(args: argparse.Namespace) -> Any:
    """A Client of the connection options."""
    from .client import Client

    tls: Any = None
    if args.tls:
        tls = True if args.tls == "system" else Path(args.tls)
    model = getattr(args, "model", None)  # models and health name none
    return Client(args.target, model=model, timeout=args.timeout, tls=tls, token=args.token)


def fail(message: str) -> int:
    """Say what went wrong on stderr; exit status 2."""
    print(f"bertserve: {message}", file=sys.stderr)
    return 2


def guarded(func: Any, args: argparse.Namespace) -> int:
    """Run ``func(args)``; a server's refusal or a bad value becomes one line and status 2."""
    from .errors import BertserveError

    try:
        return func(args)
    except BertserveError as exc:
        from .cli import cli_message

        return fail(cli_message(exc, args))  # what fixes it, in the CLI's flags
    except (ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    except ModuleNotFoundError as exc:
        if exc.name in ("pyarrow", "tokenizers"):  # optional: the message has the pip hint
            return fail(str(exc))
        raise
