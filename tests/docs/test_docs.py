"""Every code block of README.md and docs/*.md runs, as written, against a live server.

The blocks run in order, in one working folder laid out like a clone after the quickstart:
the repository's files (linked), ``models/`` holding the bundled MiniLM as ``bertserve export
minilm`` writes it (fp32-opt and int8), ``corpus.txt`` and ``corpus/`` (a few lines of text),
``.venv`` (this interpreter's environment, first on PATH). ``BERTSERVE_TARGET`` and every
``127.0.0.1:50051`` in a block point at a server on that folder's ``models``; ``bertserve
serve`` inside a block starts another on free ports (tests/docs/prelude.sh).

bash blocks run with bash, console blocks command by command (the output they show is
compared: tests/docs/docmatch.py), python blocks with this interpreter (tests/docs/pyblock.py
checks values shown in comments), js blocks with node, yaml blocks load as the server's
configuration. Markers (tests/docs/docblocks.py) skip a block, with its reason, or leave its
shown output uncompared.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docblocks import ROOT, Block, all_blocks, console_commands
from docmatch import mismatch

HERE = Path(__file__).resolve().parent
PRELUDE = HERE / "prelude.sh"
DOCS_TARGET = "127.0.0.1:50051"
BLOCK_TIMEOUT_S = 420
# what `bertserve export minilm` writes (bertserve.variants.DEFAULT_VARIANTS)
QUICKSTART_VARIANTS = ("fp32-opt", "int8")
# the repository's own entries that the working folder does not link
NOT_LINKED = {".git", ".cache", ".venv", "models", "node_modules"}
CORPUS = [
    "I love Paris",
    "Paris is lovely in May",
    "The quick brown fox jumps over the lazy dog.",
    "Feature extraction with BERT, over gRPC.",
]

BLOCKS = all_blocks()


@pytest.fixture(scope="session")
def docs_home(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working folder every block runs in (see the module's docstring)."""
    from bertserve.variants import DEFAULT_VARIANTS
    from servers import link_package

    assert QUICKSTART_VARIANTS == tuple(DEFAULT_VARIANTS)
    home = tmp_path_factory.mktemp("docs-home")
    for entry in ROOT.iterdir():
        if entry.name not in NOT_LINKED:
            (home / entry.name).symlink_to(entry)
    (home / ".venv").symlink_to(Path(sys.executable).parents[1])
    for variant in QUICKSTART_VARIANTS:
        link_package(model_repo / "minilm" / variant, home / "models" / "minilm" / variant)
    (home / "corpus.txt").write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    (home / "corpus").mkdir()
    (home / "corpus" / "corpus.txt").write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return home


@pytest.fixture(scope="session")
def docs_server(docs_home: Path):
    from servers import start_server

    server = start_server(docs_home / "models")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def docs_env(docs_home: Path, docs_server) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BERTSERVE_") and key not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    venv = Path(sys.executable).parents[1]
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        # ./dev's venv by its own path: were ./dev to install, pip would write that path into
        # the scripts' #! lines, not the working folder's link, which the test run removes
        BERTSERVE_VENV=str(venv),
        BERTSERVE_TARGET=docs_server.target,
        PYTHONUNBUFFERED="1",
    )
    return env


def node_shown(block: Block) -> str:
    """What a js block's ``console.log(...);  // VALUE: prose`` lines show, one line each."""
    shown = []
    for line in block.text.splitlines():
        code, _, comment = line.partition("//")
        if "console.log(" in code and comment.strip():
            shown.append(comment.split(":", 1)[0].strip())
    return "\n".join(shown)


def dev_installed(extras: tuple[str, ...] = ("server", "export", "dev")) -> bool:
    """Whether ./dev's install stamp says this venv holds ``extras`` for this pyproject.toml
    (then ./dev quickstart, lint and proto install nothing)."""
    stamp = Path(sys.executable).parents[1] / ".bertserve-install"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    rest = f"{digest} Python {platform.python_version()}"
    for line in stamp.read_text().splitlines() if stamp.is_file() else ():
        installed, _, line_rest = line.partition(" ")
        if line_rest == rest and set(extras) <= set(installed.split(",")):
            return True
    return False


def _scratch(request: pytest.FixtureRequest) -> Path:
    """A folder for the blocks' own files, outside the working folder (which ./dev lint
    checks)."""
    return request.getfixturevalue("tmp_path")


def _text(block: Block, target: str) -> str:
    return block.text.replace(DOCS_TARGET, target)


def _run(command: list[str], block: Block, home: Path, env: dict, **kwargs) -> str:
    done = subprocess.run(
        command,
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        **kwargs,
    )
    assert done.returncode == 0, (
        f"{block.name} exited {done.returncode}\n--- block ---\n{block.text}"
        f"--- stdout ---\n{done.stdout[-6000:]}\n--- stderr ---\n{done.stderr[-6000:]}"
    )
    return done.stdout


def _bash(script: str) -> list[str]:
    return ["bash", "-c", f'source "{PRELUDE}"\n{script}']


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_block(block: Block, request: pytest.FixtureRequest) -> None:
    if block.skip_reason is not None:
        pytest.skip(f"{block.name}: {block.skip_reason}")
    assert block.runner is not None, (
        f"{block.name}: no runner for ```{block.lang} blocks: run it another way or mark it "
        "<!-- docs: skip (why) -->"
    )
    if "./dev " in block.text and not dev_installed():
        pytest.skip(
            f"{block.name}: this venv has no ./dev install stamp for this pyproject.toml, so "
            "./dev would install into it first (./dev test makes one)"
        )
    home: Path = request.getfixturevalue("docs_home")
    env: dict[str, str] = request.getfixturevalue("docs_env")
    target = env["BERTSERVE_TARGET"]
    if block.runner == "bash":
        _run(_bash(_text(block, target)), block, home, env)
    elif block.runner == "console":
        for command in console_commands(block):
            shown = command.output.replace(DOCS_TARGET, target)
            out = _run(_bash(command.command.replace(DOCS_TARGET, target)), block, home, env)
            if shown.strip() and block.compare_output:
                problem = mismatch(shown, out)
                assert problem is None, f"{block.name}, line {command.line}: {problem}"
    elif block.runner == "python":
        python = sys.executable
        if block.marker == "tritonclient":
            python = str(request.getfixturevalue("tritonclient_python"))
        script = _scratch(request) / f"{block.path.stem}-{block.line}.py"
        script.write_text(_text(block, target), encoding="utf-8")
        _run([python, str(HERE / "pyblock.py"), str(script)], block, home, env)
    elif block.runner == "node":
        request.getfixturevalue("node_tests")  # node present, clients/node's packages installed
        node = shutil.which("node")
        assert node
        out = _run([node, "-"], block, home, env, input=_text(block, target))
        shown = node_shown(block)
        if shown and block.compare_output:
            problem = mismatch(shown, out)
            assert problem is None, f"{block.name}: {problem}"
    elif block.runner == "yaml":
        from bertserve.server.config import load_config

        config = _scratch(request) / f"{block.path.stem}-{block.line}.yaml"
        config.write_text(block.text, encoding="utf-8")
        load_config({"repo": str(home / "models")}, config, environ={})
