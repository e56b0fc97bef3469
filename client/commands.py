"""The client's sub-commands: embed, classify, tokenize, info, models, health."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from bertserve.client.cli import HelpFormatter
from bertserve.variants import VARIANTS

FORMATS = ("json", "npy", "npz")


def _examples(*commands: str) -> str:
    """An epilog of example command lines, kept as written by HelpFormatter."""
    return "examples:\n" + "".join(f"  {command}\n" for command in commands)


def _connection(
    parser: argparse.ArgumentParser, *, variant: bool = False, model: bool = True
) -> None:
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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the client's sub-commands to the ``bertserve`` command."""
    embed = subparsers.add_parser(
        "embed",
        help="features of texts (or of a whole file with --input)",
        description="Embed texts given on the command line, or a .txt/.jsonl file with "
        "--input (bulk: streamed, resumable, written atomically to .npy or .parquet).",
        epilog=_examples(
            'bertserve embed "I love Paris" "Paris is lovely"',
            'bertserve embed "I love Paris" --tokens --layers -1,-2 --format npz -o paris.npz',
            "bertserve embed --input texts.txt --output vectors.npy --normalize",
        ),
        formatter_class=HelpFormatter,
    )
    embed.add_argument("texts", nargs="*", help="texts to embed")
    # So that `--layers -1,-2` reads as a value, not as an unknown option.
    embed._negative_number_matcher = re.compile(r"^-\d+(,\s*-?\d+)*$")
    _connection(embed, variant=True)
    embed.add_argument(
        "--pooling",
        choices=("cls", "pooler", "mean", "max", "none"),
        help="how tokens become the sentence vector (default: the model's, see `info`)",
    )
    embed.add_argument("--layers", default=None, help="hidden states: all, or indices like -1,-2")
    embed.add_argument("--tokens", action="store_true", help="also return token embeddings")
    embed.add_argument(
        "--aggregate",
        choices=("last", "concat_last_4", "sum_last_4", "mean_all"),
        default=None,
        help="hidden states combined into the token vectors (default: last)",
    )
    embed.add_argument("--normalize", action="store_true", help="L2-normalise sentence vectors")
    embed.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="of vectors"
    )
    embed.add_argument("--truncate", action="store_true", help="cut texts over the model's limit")
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
    embed.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bulk: rows, rows/s and ETA on stderr from the first batch (default: only when "
        "stderr is a terminal; --progress in a log, --no-progress never)",
    )
    embed.set_defaults(run=run_embed, extra="")

    classify = subparsers.add_parser(
        "classify",
        help="labels of texts from a fine-tuned classifier",
        description="The label and the probability of every label (best first) for each text, "
        "from a model exported by `bertserve finetune`.",
        epilog=_examples(
            'bertserve classify "what a great day" --model minilm-sentiment',
            'bertserve classify "so bad" "fine" --model minilm-sentiment --top-k 1 --format json',
        )
        + "(minilm-sentiment: bertserve finetune minilm --data sentiment --out models)\n",
        formatter_class=HelpFormatter,
    )
    classify.add_argument("texts", nargs="+", help="texts to classify")
    _connection(classify, variant=True)
    classify.add_argument("--pair", action="append", help="second segment (one per text)")
    classify.add_argument("--top-k", type=int, default=0, help="labels per text (0: all)")
    classify.add_argument("--truncate", action="store_true", help="cut texts over the limit")
    classify.add_argument("--format", choices=("text", "json"), default="text", help="output")
    classify.set_defaults(run=run_classify, extra="")

    tokenize = subparsers.add_parser(
        "tokenize",
        help="the server's tokenization of texts",
        description="The tokens, token ids, token type ids and attention mask the server's "
        "tokenizer makes of each text (or text pair), exactly as the model sees them.",
        epilog=_examples(
            'bertserve tokenize "I love Paris"',
            'bertserve tokenize "Where is it?" --pair "In Paris." --pad-to 16 --format json',
        ),
        formatter_class=HelpFormatter,
    )
    tokenize.add_argument("texts", nargs="+", help="texts to tokenize")
    _connection(tokenize)
    tokenize.add_argument("--pair", action="append", help="second segment (one per text)")
    tokenize.add_argument("--pad-to", type=int, default=0, help="pad every sequence to N tokens")
    tokenize.add_argument("--truncate", action="store_true", help="cut texts over the limit")
    tokenize.add_argument("--format", choices=("text", "json"), default="text", help="output")
    tokenize.set_defaults(run=run_tokenize, extra="")

    info = subparsers.add_parser(
        "info",
        help="what the server says about a model",
        description="One model's shape (layers, hidden size, heads, max length, vocabulary), "
        "its variants and which are loaded, its default variant and why, and its labels.",
        epilog=_examples("bertserve info", "bertserve info --model minilm --format json"),
        formatter_class=HelpFormatter,
    )
    _connection(info)
    info.add_argument("--format", choices=("text", "json"), default="text", help="output")
    info.set_defaults(run=run_info, extra="")

    models = subparsers.add_parser(
        "models",
        help="the models a server serves",
        description="Every model the server serves, as `info` shows one; the default model "
        "is marked.",
        epilog=_examples("bertserve models", "bertserve models --format json"),
        formatter_class=HelpFormatter,
    )
    _connection(models, model=False)
    models.add_argument("--format", choices=("text", "json"), default="text", help="output")
    models.set_defaults(run=run_models, extra="")

    health = subparsers.add_parser(
        "health",
        help="grpc.health.v1 status (exit 0 when SERVING)",
        description="Print the server's grpc.health.v1 status (SERVING, NOT_SERVING, ...) and "
        "exit 0 only when it is SERVING: a readiness check for scripts.",
        epilog=_examples(
            "bertserve health",
            "bertserve health --service bertserve.v1.BertService --timeout 5",
        ),
        formatter_class=HelpFormatter,
    )
    _connection(health, model=False)
    health.add_argument(
        "--service", default="", help="a service name (default: '', the whole server)"
    )
    health.set_defaults(run=run_health, extra="")


def make_client(args: argparse.Namespace) -> Any:
    from .client import Client

    tls: Any = None
    if args.tls:
        tls = True if args.tls == "system" else Path(args.tls)
    model = getattr(args, "model", None)  # models and health name none
    return Client(args.target, model=model, timeout=args.timeout, tls=tls, token=args.token)


def _fail(message: str) -> int:
    print(f"bertserve: {message}", file=sys.stderr)
    return 2


def _guarded(func: Any, args: argparse.Namespace) -> int:
    from .errors import BertserveError

    try:
        return func(args)
    except BertserveError as exc:
        return _fail(str(exc))
    except (ValueError, FileNotFoundError) as exc:
        return _fail(str(exc))
    except ModuleNotFoundError as exc:
        if exc.name in ("pyarrow", "tokenizers"):  # optional: the message has the pip hint
            return _fail(str(exc))
        raise


def run_embed(args: argparse.Namespace) -> int:
    return _guarded(_embed, args)


def _embed_options(args: argparse.Namespace) -> dict[str, Any]:
    output: list[str] = []
    if args.tokens:
        output.append("tokens")
    if args.pooling not in (None, "none") or not (args.tokens or args.layers):
        output.append("sentence")
    return {
        "output": output or None,
        "pooling": args.pooling,
        "layers": args.layers,
        "aggregate": args.aggregate,
        "normalize": args.normalize,
        "dtype": args.dtype,
        "truncate": args.truncate,
        "variant": args.variant,
    }


def _embed(args: argparse.Namespace) -> int:
    options = _embed_options(args)
    if args.input is not None:
        return _embed_file(args, options)
    if not args.texts:
        return _fail("embed: give texts, or a file with --input")
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
            return _fail("--format npy holds one array: ask for one output, or use npz/json")
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
        return _fail("embed: give texts or --input, not both")
    if args.output is None or args.output.suffix.lower() not in OUTPUT_SUFFIXES:
        return _fail("embed --input needs --output FILE.npy or FILE.parquet")
    if args.tokens or args.layers:
        return _fail("bulk embedding writes sentence vectors: drop --tokens/--layers")
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


def run_classify(args: argparse.Namespace) -> int:
    return _guarded(_classify, args)


def _classify(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        result = client.classify(
            args.texts,
            pairs=args.pair,
            top_k=args.top_k,
            truncate=args.truncate,
            variant=args.variant,
        )
    if args.format == "json":
        rows = [
            {"text": text, "label": r.label, "scores": r.scores}
            for text, r in zip(args.texts, result.results, strict=True)
        ]
        print(json.dumps({"model": result.model, "variant": result.variant, "results": rows}))
        return 0
    for index, (text, r) in enumerate(zip(args.texts, result.results, strict=True)):
        if index:
            print()
        print(f"{json.dumps(text, ensure_ascii=False)}: {r.label}")
        for label, score in r.scores.items():
            print(f"  {label:<16}{score:.4f}")
    return 0


def run_tokenize(args: argparse.Namespace) -> int:
    return _guarded(_tokenize, args)


def _tokenize(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        encodings = client.tokenize(
            args.texts, pairs=args.pair, pad_to=args.pad_to, truncate=args.truncate
        )
    if args.format == "json":
        print(json.dumps([e.__dict__ for e in encodings]))
        return 0
    for index, (text, e) in enumerate(zip(args.texts, encodings, strict=True)):
        if index:
            print()
        rows = [
            ("sentence", json.dumps(text, ensure_ascii=False)),
            ("tokens", " ".join(e.tokens)),
            ("attention_mask", " ".join(map(str, e.attention_mask))),
            ("token_ids", " ".join(map(str, e.input_ids))),
            ("token_type_ids", " ".join(map(str, e.token_type_ids))),
        ]
        if e.truncated:
            rows.append(("truncated", f"{e.truncated} tokens dropped"))
        for label, value in rows:
            print(f"{label:<16}{value}")
    return 0


def _model_text(m: Any) -> str:
    variants = ", ".join(
        v.name
        + (
            f" (loaded{', ' + v.execution_provider if v.execution_provider else ''})"
            if v.loaded
            else ""
        )
        for v in m.variants
    )
    lines = [
        f"{m.name}{' (default)' if m.is_default else ''}: {m.architecture}, "
        f"{m.num_layers} layers, hidden {m.hidden_size}, {m.num_heads} heads, "
        f"intermediate {m.intermediate_size}",
        f"  max_length {m.max_length}, vocab {m.vocab_size}, "
        f"{'uncased' if m.lowercase else 'cased'}, default pooling {m.default_pooling}",
        f"  variants: {variants} (default {m.default_variant})",
        *([f"  default because: {m.default_variant_reason}"] if m.default_variant_reason else []),
        f"  source: {m.source}",
    ]
    if m.random_weights:
        lines.append("  RANDOM WEIGHTS: numbers for speed tests, no meaning")
    if m.labels:
        lines.append(f"  labels: {', '.join(m.labels)}")
    return "\n".join(lines)


def _model_json(m: Any) -> dict[str, Any]:
    data = dict(m.__dict__)
    data["variants"] = [v.__dict__ for v in m.variants]
    return data


def run_info(args: argparse.Namespace) -> int:
    def info(args: argparse.Namespace) -> int:
        with make_client(args) as client:
            m = client.info(args.model)
        print(json.dumps(_model_json(m)) if args.format == "json" else _model_text(m))
        return 0

    return _guarded(info, args)


def run_models(args: argparse.Namespace) -> int:
    def models(args: argparse.Namespace) -> int:
        with make_client(args) as client:
            found = client.models()
        if args.format == "json":
            print(json.dumps([_model_json(m) for m in found]))
        else:
            print("\n".join(_model_text(m) for m in found))
        return 0

    return _guarded(models, args)


def run_health(args: argparse.Namespace) -> int:
    def health(args: argparse.Namespace) -> int:
        with make_client(args) as client:
            status = client.health(args.service, timeout=args.timeout)
        print(status)
        return 0 if status == "SERVING" else 1

    return _guarded(health, args)
