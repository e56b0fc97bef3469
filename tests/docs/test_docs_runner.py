"""The docs runner's own parts, without a server: blocks and markers, console commands, the
output comparison and the values python comments show."""

from __future__ import annotations

import pytest
from docblocks import Block, blocks, console_commands
from docmatch import mismatch
from pyblock import compile_block, docs_check

DOC = """Text.

<!-- docs: skip (needs a GPU) -->
```bash
bertserve serve --device cuda
```

```console
$ grpcurl -d '{"a": 1,
    "b": 2}' host list  # the model's list
one
$ echo hi \\
  there
hi there
```
"""


def test_blocks_carry_their_marker_and_console_commands_their_output(tmp_path):
    path = tmp_path / "doc.md"
    path.write_text(DOC)
    bash, console = blocks(path)
    assert (bash.lang, bash.skip_reason, bash.line) == ("bash", "needs a GPU", 4)
    assert console.skip_reason is None and console.compare_output
    first, second = console_commands(console)
    assert first.command.endswith("list  # the model's list") and first.output == "one"
    assert second.command == "echo hi \\\n  there" and second.output == "hi there"


def test_a_console_line_without_a_prompt_is_refused(tmp_path):
    block = Block(tmp_path / "doc.md", 1, "console", "ls\n", "")
    with pytest.raises(ValueError, match="is not a '\\$ ' command"):
        console_commands(block)


@pytest.mark.parametrize(
    ("shown", "printed"),
    [
        ('{"lengths": [5], ...}', '{\n  "lengths": [\n    5\n  ],\n  "timing": {}\n}'),
        ("token_ids 101 1045 2293", "token_ids       101 1045 2293"),
        ("[0.3018988370895386, -0.1649, ...]", "[0.30189884, -0.16490965, 0.56]"),
    ],
)
def test_output_that_matches(shown, printed):
    assert mismatch(shown, printed) is None


@pytest.mark.parametrize(
    ("shown", "printed"),
    [
        ('{"lengths": [5, 6]}', '{"lengths": [5, 5]}'),
        ("token_ids 101 1045", "token_ids 1011045"),
        ("[0.3018]", "[0.3118]"),
        ("a\nb\nc", "a\nb"),
        ("[5]", "[5.0]"),
    ],
)
def test_output_that_differs(shown, printed):
    assert mismatch(shown, printed) is not None


def test_python_comments_that_show_values_are_checked():
    namespace = {"__docs_check__": docs_check}
    source = "x = [5, 5]\nx  # [5, 5]: lengths\nlen(x)  # 2\nx  # prose\n"
    exec(compile_block(source, "b"), namespace)
    with pytest.raises(AssertionError, match=r"line 2: \[5, 5\] where the docs show"):
        exec(compile_block("x = [5, 5]\nx  # array([5, 6]): lengths\n", "b"), namespace)


def test_a_shape_is_compared_with_the_value_s_shape():
    import numpy as np

    docs_check(np.zeros((2, 384)), "# (2, 384) float32", 1)
    with pytest.raises(AssertionError):
        docs_check(np.zeros((1, 384)), "# (2, 384) float32", 1)
