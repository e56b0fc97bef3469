"""The code blocks of README.md and docs/*.md, with the marker each may carry.

A marker is an HTML comment on the last non-blank line before a fence (invisible on GitHub):

- ``<!-- docs: skip (why) -->``: not run; the reason is shown as the test's skip reason.
- ``<!-- docs: output not compared (why) -->``: run, but the output the block shows is not
  compared (a progress line, a timing).
- ``<!-- docs: tritonclient -->``: a python block run with tritonclient's own venv.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

# fence language -> how the block runs; "" and "text" are diagrams and prose, never run
RUNNERS = {
    "bash": "bash",
    "sh": "bash",
    "shell": "bash",
    "console": "console",
    "python": "python",
    "py": "python",
    "js": "node",
    "javascript": "node",
    "mjs": "node",
    "yaml": "yaml",
}
NOT_CODE = ("", "text")

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*docs:\s*(?P<what>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and its marker (or "")."""

    path: Path
    line: int  # of the opening fence, from 1
    lang: str
    text: str
    marker: str

    @property
    def name(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}"

    @property
    def runner(self) -> str | None:
        return RUNNERS.get(self.lang)

    @property
    def skip_reason(self) -> str | None:
        match = re.match(r"skip\s*\((?P<why>.*)\)$", self.marker)
        return match.group("why") if match else None

    @property
    def compare_output(self) -> bool:
        return not self.marker.startswith("output not compared")


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown file, in order."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, indent = opening.group("fence"), len(opening.group("indent"))
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = [
            line[indent:] if line[:indent].isspace() else line for line in lines[index + 1 : end]
        ]
        before = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = _MARKER.match(before)
        found.append(
            Block(
                path,
                index + 1,
                opening.group("lang").lower(),
                "\n".join(body) + "\n",
                marker.group("what") if marker else "",
            )
        )
        index = end + 1
    return found


def all_blocks() -> list[Block]:
    """The blocks of README.md and docs/*.md that are code (not diagrams or plain text)."""
    return [block for path in DOCUMENTS for block in blocks(path) if block.lang not in NOT_CODE]


@dataclass(frozen=True)
class Command:
    """One ``$ command`` of a console block and the output shown after it."""

    line: int
    command: str
    output: str


def _continues(command: str) -> bool:
    """A shell would ask for more: a trailing backslash, or a quote still open."""
    if command.endswith("\\"):
        return True
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return True
    return False


def console_commands(block: Block) -> list[Command]:
    """``$ `` lines (continued by a trailing backslash or an open quote) and the lines after
    them up to the next ``$ ``: the output the docs show."""
    commands: list[Command] = []
    lines = block.text.rstrip("\n").split("\n")
    index = 0
    while index < len(lines):
        if not lines[index].startswith("$ "):
            raise ValueError(f"{block.name}: console line {lines[index]!r} is not a '$ ' command")
        start = index
        parts = [lines[index][2:]]
        while _continues("\n".join(parts)) and index + 1 < len(lines):
            index += 1
            parts.append(lines[index])
        index += 1
        output = []
        while index < len(lines) and not lines[index].startswith("$ "):
            output.append(lines[index])
            index += 1
        commands.append(Command(block.line + 1 + start, "\n".join(parts), "\n".join(output)))
    return commands
