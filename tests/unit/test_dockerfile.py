"""What can be checked of the Dockerfile without a Docker engine.

Every file it copies exists and is not excluded by .dockerignore, the extras it
installs exist, and the commands it runs (export, serve, health) parse with
today's CLI, so a renamed flag breaks this test rather than the image.
"""

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from bertserve.client.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# continuation lines joined, then one instruction a line
INSTRUCTIONS = re.findall(r"^([A-Z]+)\s+(.*)$", DOCKERFILE.replace("\\\n", " "), flags=re.M)


def _args(name: str) -> list[str]:
    return [body for inst, body in INSTRUCTIONS if inst == name]


def _build_args() -> dict[str, str]:
    pairs = (a.split("=", 1) for a in _args("ARG") if "=" in a)
    return {k: v.strip() for k, v in pairs}


def _expand(text: str) -> str:
    values = _build_args()
    return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


def test_copied_sources_exist_and_reach_the_build_context() -> None:
    ignored = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip()]
    sources = [
        src
        for body in _args("COPY")
        if not body.startswith("--from")
        for src in shlex.split(body)[:-1]
    ]
    assert "pyproject.toml" in sources and "server" in sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not any(fnmatch.fnmatch(src, pattern) for pattern in ignored), src


def test_installed_extras_exist() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    installs = [_expand(body) for body in _args("RUN") if "pip install" in body]
    wanted = {m for body in installs for m in re.findall(r'"\.\[([\w-]+)\]"', body)}
    assert wanted == {"export", "server"}
    assert wanted <= set(extras) and "gpu" in extras


def _exec_form(instruction: str) -> list[str]:
    (body,) = _args(instruction)
    return json.loads(body)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(lambda: _exec_form("ENTRYPOINT")[1:] + _exec_form("CMD"), id="serve"),
        pytest.param(
            lambda: json.loads(_args("HEALTHCHECK")[0].split("CMD", 1)[1])[1:], id="health"
        ),
        pytest.param(
            lambda: shlex.split(_expand(next(b for b in _args("RUN") if "bertserve export" in b)))[
                1:
            ],
            id="export",
        ),
    ],
)
def test_commands_parse_with_the_cli(argv) -> None:
    args = build_parser().parse_args(argv())
    assert callable(args.run)
