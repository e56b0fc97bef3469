"""Compare output the docs show with output a command printed.

``...`` stands for anything; whitespace may differ where punctuation separates tokens (the
docs print JSON on one line where grpcurl prints it over many); integers must be equal and
decimals equal within 1e-4 (vectors move in their last bits between CPUs).
"""

from __future__ import annotations

import math
import re

_TOKEN = re.compile(
    r"(?P<ellipsis>\.\.\.)"
    r"|(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
    r"|(?P<word>[^\W\d]\w*|\w+)"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_NUMBER = r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
TOLERANCE = 1e-4


def _pattern(expected: str) -> tuple[str, list[str]]:
    """A regular expression for ``expected`` and the numbers it captures, in order."""
    parts: list[str] = []
    numbers: list[str] = []
    previous_wordish = False
    pending_space = False
    for token in _TOKEN.finditer(expected.strip()):
        kind, text = token.lastgroup, token.group()
        if kind == "space":
            pending_space = True
            continue
        wordish = kind in ("word", "number")
        if parts:
            # two words need a gap where the docs show one, and may have none where they do not
            parts.append(r"\s+" if (pending_space and wordish and previous_wordish) else r"\s*")
        pending_space = False
        if kind == "ellipsis":
            parts.append(r".*?")
            previous_wordish = False
            continue
        if kind == "number":
            parts.append(_NUMBER)
            numbers.append(text)
        else:
            parts.append(re.escape(text))
        previous_wordish = wordish
    return "".join(parts), numbers


def mismatch(expected: str, actual: str) -> str | None:
    """None when ``actual`` is what ``expected`` shows, else what differs."""
    pattern, numbers = _pattern(expected)
    found = re.fullmatch(pattern, actual.strip(), re.DOTALL)
    if found is None:
        return f"expected (docs):\n{expected}\ngot:\n{actual}"
    for shown, got in zip(numbers, found.groups(), strict=True):
        if any(c in shown for c in ".eE"):
            if not math.isclose(float(shown), float(got), rel_tol=TOLERANCE, abs_tol=TOLERANCE):
                return f"{got} where the docs show {shown}:\n{actual}"
        elif int(shown) != int(float(got)) or ("." in got):
            return f"{got} where the docs show {shown}:\n{actual}"
    return None
