"""The client's sub-commands: embed (in ``embed_command``), classify, tokenize, info, models,
health."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bertserve.client.cli import HelpFormatter

from . import embed_command
from .cli_common import add_connection, examples, guarded, make_client


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the client's sub-commands to the ``bertserve`` command."""
    embed_command.register(subparsers)

    classify = subparsers.add_parser(
        "classify",
        help="labels of texts from a fine-tuned classifier",
        description="The label and the probability of every label (best first) for each text, "
        "from a model exported by `bertserve finetune`.",
        epilog=examples(
            'bertserve classify "what a great day" --model minilm-sentiment',
            'bertserve classify "so bad" "fine" --model minilm-sentiment --top-k 1 --format json',
        )
        + "(minilm-sentiment: bertserve finetune minilm --data sentiment --out models)\n",
        formatter_class=HelpFormatter,
    )
    classify.add_argument("texts", nargs="+", help="texts to classify")
    add_connection(classify, variant=True)
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
        epilog=examples(
            'bertserve tokenize "I love Paris"',
            'bertserve tokenize "Where is it?" --pair "In Paris." --pad-to 16 --format json',
        ),
        formatter_class=HelpFormatter,
    )
    tokenize.add_argument("texts", nargs="+", help="texts to tokenize")
    add_connection(tokenize)
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
        epilog=examples("bertserve info", "bertserve info --model minilm --format json"),
        formatter_class=HelpFormatter,
    )
    add_connection(info)
    info.add_argument("--format", choices=("text", "json"), default="text", help="output")
    info.set_defaults(run=run_info, extra="")

    models = subparsers.add_parser(
        "models",
        help="the models a server serves",
        description="Every model the server serves, as `info` shows one; the default model "
        "is marked.",
        epilog=examples("bertserve models", "bertserve models --format json"),
        formatter_class=HelpFormatter,
    )
    add_connection(models, model=False)
    models.add_argument("--format", choices=("text", "json"), default="text", help="output")
    models.set_defaults(run=run_models, extra="")

    health = subparsers.add_parser(
        "health",
        help="grpc.health.v1 status (exit 0 when SERVING)",
        description="Print the server's grpc.health.v1 status (SERVING, NOT_SERVING, ...) and "
        "exit 0 only when it is SERVING: a readiness check for scripts.",
        epilog=examples(
            "bertserve health",
            "bertserve health --service bertserve.v1.BertService --timeout 5",
        ),
        formatter_class=HelpFormatter,
    )
    add_connection(health, model=False)
    health.add_argument(
        "--service", default="", help="a service name (default: '', the whole server)"
    )
    health.set_defaults(run=run_health, extra="")


def run_classify(args: argparse.Namespace) -> int:
    return guarded(_classify, args)


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
    return guarded(_tokenize, args)


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
        *(
            [
                f"  long texts (--long-text chunk): windows of up to {m.chunk_tokens} tokens, "
                f"sharing {m.chunk_overlap} by default"
            ]
            if m.chunk_tokens
            else []
        ),
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

    return guarded(info, args)


def run_models(args: argparse.Namespace) -> int:
    def models(args: argparse.Namespace) -> int:
        with make_client(args) as client:
            found = client.models()
        if args.format == "json":
            print(json.dumps([_model_json(m) for m in found]))
        else:
            print("\n".join(_model_text(m) for m in found))
        return 0

    return guarded(models, args)


def run_health(args: argparse.Namespace) -> int:
    def health(args: argparse.Namespace) -> int:
        with make_client(args) as client:
            status = client.health(args.service, timeout=args.timeout)
        print(status)
        return 0 if status == "SERVING" else 1

    return guarded(health, args)
