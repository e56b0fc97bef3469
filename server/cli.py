"""``bertserve serve``: the command-line front of the server (imports nothing heavy at import).

Its flags come from the settings declared in server/config.py: one flag per setting."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """\
examples:
  bertserve serve --repo models
  bertserve serve --repo models --variant minilm=int8 --metrics-port 9090
  bertserve serve --repo models --host 0.0.0.0 --port 50052 --allowed-variants fp32-opt,int8
"""

GROUP_TITLES = {
    "batch": "batching (every model's; a model's own `models:` YAML keys stay its own)",
    "security": "security",
    "limits": "limits",
    "connections": "connections",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` sub-command."""
    from bertserve.client.cli import HelpFormatter  # here: importing this module stays light
    from bertserve.server.config import env_name, flag_name, settings, shown_default

    parser = subparsers.add_parser(
        "serve",
        help="serve a model repository over gRPC",
        description=(
            "Serve every model of a repository over gRPC (bertserve.v1.BertService, the Open "
            "Inference Protocol, health, reflection). Unset flags fall back to BERTSERVE_* "
            "environment variables, then the --config YAML file, then defaults."
        ),
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--config", help="YAML file with server settings and per-model batch settings"
    )
    groups = {name: parser.add_argument_group(title) for name, title in GROUP_TITLES.items()}
    for field in settings():
        flag = flag_name(field)
        if flag is None:
            continue
        meta = field.metadata["setting"]
        where = groups.get(meta.group, parser)
        help_text = f"{meta.help} (default {shown_default(field)}; env {env_name(field)})"
        help_text = help_text.replace("%", "%%")
        kwargs: dict = {"dest": _dest(flag), "default": None, "help": help_text}
        if not isinstance(field.default, bool):
            kwargs["metavar"] = flag[2:].upper().replace("-", "_")
        if isinstance(field.default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta.append:
            kwargs.update(action="append", metavar="MODEL=VARIANT")
        elif meta.choices:
            kwargs.update(choices=meta.choices, metavar=None)
        # values stay strings here: load_config converts them as it does the environment's
        where.add_argument(flag, **kwargs)
    parser.set_defaults(run=run, extra="server")


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")  # argparse's own: --grace-period -> args.grace_period


def flag_values(args: argparse.Namespace) -> dict:
    """The parsed ``serve`` flags keyed by setting name, as load_config takes them."""
    from bertserve.server.config import flag_name, settings

    return {f.name: getattr(args, _dest(flag_name(f))) for f in settings() if flag_name(f)}


def run(args: argparse.Namespace) -> int:
    """Build the config and serve until SIGTERM; returns the exit status."""
    from bertserve.server.config_load import load_config
    from bertserve.server.errors import DeviceError

    try:
        config = load_config(flag_values(args), args.config)
        from bertserve.server.app import serve

        serve(config)
    except (ValueError, OSError, DeviceError) as error:
        print(f"bertserve serve: {error}", file=sys.stderr)
        return 2
    return 0
