"""The ``bertserve`` command: one entry point whose sub-commands come from each part.

Each part's CLI module registers its sub-commands without importing its heavy
dependencies: the export part (torch) and the server part (onnxruntime) are
imported only when one of their sub-commands runs, so a client-only install
still lists and explains them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Sequence

# Each defines register(subparsers): it adds its sub-commands and sets the
# defaults run=<function(args) -> int> and extra=<the pip extra they need>.
PARTS = (
    "bertserve.export.cli",
    "bertserve.server.cli",
    "bertserve.client.commands",
    "bertserve.train.cli",
    "bertserve.bench.cli",
    "bertserve.dataset.cli",
)


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose, keeps indented lines (an epilog's examples) as written, shows defaults.

    ``ArgumentDefaultsHelpFormatter`` would also print "(default: None)" and "(default: False)";
    here an option without a value of its own (None, off, empty) says nothing, and help text that
    already names its default is left alone.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if line.startswith(" ") or not line:
                lines.append(indent + line)
            else:
                lines.append(super()._fill_text(line, width, indent))
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
            or action.default in ([], "")
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def build_parser() -> argparse.ArgumentParser:
    from bertserve import __version__

    parser = argparse.ArgumentParser(
        prog="bertserve", description="BERT features over gRPC, made fast with ONNX Runtime."
    )
    parser.add_argument("--version", action="version", version=f"bertserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in PARTS:  # every part ships in the wheel; only running needs its extra
        importlib.import_module(module).register(sub)
    return parser


# The server's words for request fields (bertserve.v1's) -> the CLI's flags. The server keeps
# speaking its protocol; only what the CLI prints is translated.
FLAGS = {
    "model": "--model",
    "variant": "--variant",
    "pooling": "--pooling",
    "layers": "--layers",
    "aggregate": "--aggregate",
    "normalize": "--normalize",
    "dtype": "--dtype",
    "truncate": "--truncate",
    "token_embeddings": "--tokens",
    "text_pairs": "--pair",
    "pad_to": "--pad-to",
    "top_k": "--top-k",
    "long_text": "--long-text",
}
# a field path at the start of a server message: texts[2]: ..., variant='int9': ..., layers=...
_FIELD = re.compile(r"^(?P<name>[a-z_]+)(?:\[(?P<index>\d+)\])?(?P<sep>: |=)")


def cli_words(details: str, args: argparse.Namespace | None = None) -> str:
    """A server message with its request-field words replaced by the CLI's flags."""
    bulk = getattr(args, "input", None) is not None
    long_text = hasattr(args, "long_text")  # the sub-command has the flag
    chunk = " (or --long-text chunk)" if long_text else ""
    text = details.replace("set truncate=true", f"pass --truncate{chunk}")
    text = text.replace("truncate=true", "--truncate")
    if long_text:
        text = text.replace(
            "set long_text to truncate or chunk", "pass --long-text chunk (or truncate)"
        )
        text = re.sub(r"\blong_text=(\w+)", r"--long-text \1", text)
    text = text.replace("marks one with default_model", "starts it with --default-model NAME")
    if text.startswith("model: empty, and "):
        return "no --model given, and " + text.removeprefix("model: empty, and ")
    field = _FIELD.match(text)
    if field is None:
        return text
    name, index, sep = field["name"], field["index"], field["sep"]
    rest = text[field.end() :]
    if name == "texts" and index is not None:
        head = "a text of the input" if bulk else f"text {int(index) + 1}"
        return f"{head}: {rest}"
    if name in FLAGS:
        return f"{FLAGS[name]}{': ' if sep == ': ' else ' '}{rest}"
    return text


def cli_message(error: BaseException, args: argparse.Namespace | None = None) -> str:
    """What the CLI prints for a failed call: for a connection, TLS, token or deadline failure
    what to check and which flag fixes it; else the server's message in the CLI's words."""
    from .errors import CLI, BertserveError, advice

    if not isinstance(error, BertserveError):
        return str(error)
    if error.problem and error.connection is not None:
        return (
            f"{advice(error.problem, error.connection, CLI)} ({error.code.name}: {error.details})"
        )
    where = f" (request {error.request_id!r})" if error.request_id else ""
    return f"{error.code.name}: {cli_words(error.details, args)}{where}"


def install_hint(error: ModuleNotFoundError, extra: str) -> str:
    """What a missing module's sub-command says: which extra brings it, installed from this
    repository (bertserve is not on a package index)."""
    if "pip install" in str(error):  # the raiser named its own fix
        return str(error)
    part = f", part of the [{extra}] extra" if extra else ""
    extra = f"[{extra}]" if extra else ""
    return f"needs the module {error.name!r}{part}: in the bertserve checkout run: " + (
        f"pip install -e '.{extra}'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; returns its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ModuleNotFoundError as exc:
        hint = install_hint(exc, getattr(args, "extra", ""))
        print(f"bertserve {args.command}: {hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `bertserve info | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as exc:
        from .errors import BertserveError  # grpc: imported only when a call failed

        if not isinstance(exc, BertserveError):
            raise
        # a part without its own error printing (bench, embed-dataset)
        print(f"bertserve {args.command}: {cli_message(exc, args)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
