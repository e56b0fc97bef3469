"""What `bertserve embed` asks for: the sentence vector always (unless --pooling none), and
--tokens and --layers in addition, as their help says."""

import pytest
from bertserve.client.cli import build_parser
from bertserve.client.embed_command import embed_options


def outputs(*flags: str) -> list[str] | None:
    return embed_options(build_parser().parse_args(["embed", "I love Paris", *flags]))["output"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((), ["sentence"]),
        (("--tokens",), ["tokens", "sentence"]),
        (("--tokens", "--layers", "all"), ["tokens", "sentence"]),
        (("--layers", "-1,-2"), ["sentence"]),
        (("--tokens", "--pooling", "none"), ["tokens"]),
    ],
)
def test_tokens_and_layers_add_to_the_sentence_vector(flags, expected):
    assert outputs(*flags) == expected
