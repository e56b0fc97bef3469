"""Run one python block of the docs: ``python pyblock.py BLOCK.py``.

The block runs as a script (``__name__ == "__main__"``) with ``client`` already bound to a
``Client`` of ``$BERTSERVE_TARGET`` (the docs' later snippets continue the first one's
``client``; a block that makes its own replaces it). An expression statement followed by a
comment that starts with a value checks that value:

- ``x  # (2, 384) float32`` -> ``x.shape == (2, 384)``
- ``x  # array([5, 5])`` or ``# [101, 102]`` -> ``x`` (as a list) equals it
- ``x  # True``, ``# 64: ...``, ``# ['fp32-opt', 'int8']`` -> ``x == value``

Other comments are prose and check nothing.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from typing import Any

_CLOSERS = {"(": ")", "[": "]", "{": "}"}


def _leading_value(comment: str) -> tuple[bool, Any]:
    """(True, value) when the comment begins with a Python literal, else (False, None)."""
    text = comment.lstrip("#").strip()
    if text.startswith("array("):
        text = text[len("array(") :]
        found, value = _leading_value(text)
        return found, value
    depth, end = 0, 0
    for index, char in enumerate(text):
        if char in _CLOSERS:
            depth += 1
        elif char in _CLOSERS.values():
            depth -= 1
            if depth == 0:
                end = index + 1
                break
            if depth < 0:
                end = index
                break
        elif depth == 0 and char in " :;,":
            end = index
            break
    else:
        end = len(text)
    candidate = text[:end]
    try:
        return True, ast.literal_eval(candidate)
    except (ValueError, SyntaxError):
        return False, None


def docs_check(value: Any, comment: str, line: int) -> None:
    """Compare ``value`` with the value its comment shows (see the module's docstring)."""
    found, shown = _leading_value(comment)
    if not found:
        return
    got: Any = value
    if isinstance(shown, tuple) and hasattr(value, "shape"):
        got = tuple(value.shape)
    elif hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        got = value.tolist()
    elif isinstance(value, tuple) and isinstance(shown, list):
        got = list(value)
    if got != shown:
        raise AssertionError(f"line {line}: {got!r} where the docs show {comment.strip()!r}")


class _Checks(ast.NodeTransformer):
    def __init__(self, comments: dict[int, str]) -> None:
        self.comments = comments

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        comment = self.comments.get(node.end_lineno or node.lineno)
        if comment is None:
            return node
        call = ast.Call(
            func=ast.Name("__docs_check__", ast.Load()),
            args=[node.value, ast.Constant(comment), ast.Constant(node.lineno)],
            keywords=[],
        )
        return ast.copy_location(ast.Expr(call), node)


def compile_block(source: str, filename: str):
    """The block's code with a check for every expression that shows its value."""
    comments = {
        token.start[0]: token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    tree = ast.fix_missing_locations(_Checks(comments).visit(ast.parse(source, filename)))
    return compile(tree, filename, "exec")


def main(path: str) -> None:
    with open(path, encoding="utf-8") as file:
        source = file.read()
    code = compile_block(source, path)
    namespace: dict[str, Any] = {"__name__": "__main__", "__docs_check__": docs_check}
    try:
        from bertserve.client import Client
    except ModuleNotFoundError:  # another venv (tritonclient's): no bertserve client there
        exec(code, namespace)
        return
    with Client() as client:  # $BERTSERVE_TARGET
        namespace["client"] = client
        exec(code, namespace)


if __name__ == "__main__":
    main(sys.argv[1])
