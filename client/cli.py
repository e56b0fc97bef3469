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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; returns its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ModuleNotFoundError as exc:
        extra = f"[{args.extra}]" if getattr(args, "extra", "") else ""
        print(
            f"bertserve {args.command}: needs the module {exc.name!r}; "
            f"install it with: pip install 'bertserve{extra}'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `bertserve info | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
