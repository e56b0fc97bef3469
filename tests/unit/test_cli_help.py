"""Every ``bertserve`` sub-command's --help: a description, runnable examples, every default."""

from __future__ import annotations

import argparse
import shlex

import pytest
from bertserve.client.cli import build_parser


def _commands() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every sub-command parser, nested ones (``data sentiment``) included, by its words."""
    found: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found.append((f"{prefix} {name}".strip(), child))
                    walk(f"{prefix} {name}", child)

    walk("", build_parser())
    return found


COMMANDS = _commands()


def _examples(parser: argparse.ArgumentParser) -> list[str]:
    return [line for line in (parser.epilog or "").splitlines() if line.startswith("  bertserve ")]


def test_every_part_registers_its_commands():
    names = {name for name, _ in COMMANDS}
    assert {"export", "serve", "embed", "classify", "tokenize", "info", "models", "health"} <= names
    assert {"data", "data sentiment", "finetune", "probe", "bench", "embed-dataset"} <= names


@pytest.mark.parametrize(("name", "parser"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_a_description_and_examples_that_parse(name, parser):
    assert parser.description, name
    examples = _examples(parser)
    assert len(examples) >= 2, f"{name}: {parser.epilog!r}"
    shown = parser.format_help()
    for line in examples:
        assert line in shown.splitlines(), f"{name}: the example was rewrapped: {line}"
        words = shlex.split(line)[1:]
        # an example for another command (a nested one's parent) still has to parse
        build_parser().parse_args(words)


@pytest.mark.parametrize(("name", "parser"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_option_has_help_and_shows_its_default(name, parser):
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        label = f"{name} {'/'.join(action.option_strings) or action.dest}"
        assert action.help, f"{label} has no help"
        nothing = any(action.default is x for x in (None, False, argparse.SUPPRESS))
        if not nothing and action.default not in ([], ""):
            assert "default" in formatter._get_help_string(action), label


def test_models_and_health_take_no_model():
    parser = build_parser()
    for command in ("models", "health"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--model", "minilm"])
    assert parser.parse_args(["info", "--model", "minilm"]).model == "minilm"
