"""``bertserve embed``: features of texts on the command line, or of a whole file (bulk)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from bertserve.client.cli import HelpFormatter

from .cli_common import (
    add_connection,
    add_feature_options,
    add_progress_option,
    examples,
    fail,
    guarded,
    long_text_words,
    make_client,
)

FORMATS = ("json", "npy", "npz")
# Outputs of one call, not one row per text: bulk files cannot hold them.
PER_CALL_FLAGS = ("tokens", "layers", "return_chunks", "split", "span")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``embed`` to the ``bertserve`` command."""
    embed = subparsers.add_parser(
        "embed",
        help="features of texts (or of a whole file with --input)",
        description="Embed texts given on the command line, or a .txt/.jsonl file with "
        "--input (bulk: streamed, resumable, written atomically to .npy or .parquet).",
        epilog=examples(
            'bertserve embed "I love Paris" "Paris is lovely"',
            'bertserve embed "I love Paris" --tokens --layers -1,-2 --format npz -o paris.npz',
            "bertserve embed --input texts.txt --output vectors.npy --normalize",
            "bertserve embed --input docs.jsonl --output docs.npy --long-text chunk",
            'bertserve embed "$(cat report.txt)" --long-text chunk --return-chunks --split '
            "sentences",
        ),
        formatter_class=HelpFormatter,
    )
    embed.add_argument("texts", nargs="*", help="texts to embed")
    add_connection(embed, variant=True)
    add_feature_options(embed, per_call=True)
    embed.add_argument("--format", choices=FORMATS, default="json", help="for texts (default json)")
    embed.add_argument("--input", type=Path, help="bulk: a .txt (one text a line) or .jsonl file")
    embed.add_argument("--field", default="text", help="bulk: the text field of .jsonl objects")
    embed.add_argument(
        "--errors",
        choices=("fail", "skip"),
        default="fail",
        help="bulk: a line that is not UTF-8 stops the run (fail, the default; the error names "
        "the line and byte) or gets a row of NaN (skip; the count is reported)",
    )
    embed.add_argument(
        "--tokenizer",
        type=Path,
        help="bulk: a model variant folder (or tokenizer.json) to sort texts by token count "
        "instead of characters (needs the [tokenize] extra)",
    )
    embed.add_argument("--output", "-o", type=Path, help="file to write (bulk: .npy or .parquet)")
    embed.add_argument("--batch-size", type=int, default=32, help="bulk: texts per request")
    embed.add_argument("--window", type=int, default=8, help="bulk: requests in flight")
    embed.add_argument(
        "--read-ahead",
        type=int,
        default=4096,
        help="bulk: texts read and sorted by length at a time (less padding; rows stay in order)",
    )
    add_progress_option(embed, "batch", prefix="bulk: ")
    embed.set_defaults(run=run_embed, extra="")


def run_embed(args: argparse.Namespace) -> int:
    return guarded(_embed, args)


def embed_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Client.embed``'s keywords of the command's options."""
    output: list[str] = []
    if args.tokens:
        output.append("tokens")
    # the sentence vector always, unless --pooling none: --tokens and --layers add to it
    if args.pooling != "none":
        output.append("sentence")
    return {
        "output": output or None,
        "pooling": args.pooling,
        "layers": args.layers,
        "aggregate": args.aggregate,
        "normalize": args.normalize,
        "dtype": args.dtype,
        "truncate": args.truncate,
        **long_text_words(args),
        "variant": args.variant,
    }


def _embed(args: argparse.Namespace) -> int:
    options = embed_options(args)
    if args.input is not None:
        return _embed_file(args, options)
    if not args.texts:
        return fail("embed: give texts, or a file with --input")
    with make_client(args) as client:
        result = client.embed(args.texts, **options)
    if args.format == "json":
        text = json.dumps(result_to_json(result))
        if args.output:
            args.output.write_text(text + "\n")
        else:
            print(text)
        return 0
    arrays = result_arrays(result)
    if args.format == "npy":
        if len(arrays) != 2:  # lengths and one output
            return fail("--format npy holds one array: ask for one output, or use npz/json")
        (name,) = (k for k in arrays if k != "lengths")
        array = arrays[name]
    target = args.output or sys.stdout.buffer
    if args.format == "npy":
        np.save(target, array)
    else:
        np.savez(target, **arrays)
    return 0


def _embed_file(args: argparse.Namespace, options: dict[str, Any]) -> int:
    from .bulk import OUTPUT_SUFFIXES, embed_file
    from .tokenizer import load_tokenizer

    if args.texts:
        return fail("embed: give texts or --input, not both")
    if args.output is None or args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        return fail("embed --input needs --output FILE.npy or FILE.parquet")
    given = [f"--{flag.replace('_', '-')}" for flag in PER_CALL_FLAGS if getattr(args, flag)]
    if given:
        return fail(f"bulk embedding writes one sentence vector per text: drop {'/'.join(given)}")
    with make_client(args) as client:
        try:
            done = embed_file(
                client,
                args.input,
                args.output,
                field=args.field,
                errors=args.errors,
                batch_size=args.batch_size,
                window=args.window,
                read_ahead=args.read_ahead,
                lengths=load_tokenizer(args.tokenizer).lengths if args.tokenizer else None,
                progress=args.progress,
                **options,
            )
        except KeyboardInterrupt:
            print("\ninterrupted: run the same command again to continue", file=sys.stderr)
            return 130
    skipped = f" ({done.skipped} lines not UTF-8: rows of NaN)" if done.skipped else ""
    print(f"wrote {done.rows} vectors to {args.output}{skipped}", file=sys.stderr)
    return 0


def result_to_json(result: Any) -> dict[str, Any]:
    """An EmbedResult as JSON-ready lists (hidden states keyed by layer index)."""
    data: dict[str, Any] = {
        "model": result.model,
        "variant": result.variant,
        "lengths": result.lengths.tolist(),
        "truncated": result.truncated.tolist(),
    }
    if result.sentence_embedding is not None:
        data["sentence_embedding"] = result.sentence_embedding.astype(np.float32).tolist()
    if result.token_embeddings is not None:
        data["token_embeddings"] = [t.astype(np.float32).tolist() for t in result.token_embeddings]
    if result.hidden_states:
        data["hidden_states"] = {
            str(layer): [t.astype(np.float32).tolist() for t in seqs]
            for layer, seqs in result.hidden_states.items()
        }
    for name in ("chunk_embeddings", "span_embeddings"):
        if getattr(result, name) is not None:
            data[name] = getattr(result, name).astype(np.float32).tolist()
    for name in ("chunk_spans", "span_offsets"):  # [text, start, end) rows
        if getattr(result, name) is not None:
            data[name] = getattr(result, name).tolist()
    return data


def result_arrays(result: Any) -> dict[str, np.ndarray]:
    """The packed outputs plus ``lengths``: what npy/npz files hold."""
    arrays = {name: np.asarray(array) for name, array in result.outputs.items()}
    if result.hidden_states:  # absolute layer names, whatever the server called them
        arrays = {k: v for k, v in arrays.items() if not k.startswith("hidden_states.")}
        for layer, seqs in result.hidden_states.items():
            arrays[f"hidden_states.{layer}"] = np.concatenate(seqs) if seqs else np.zeros((0,))
    arrays["lengths"] = result.lengths
    return arrays
