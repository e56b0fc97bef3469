"""The long-text flags of ``bertserve embed`` and ``embed-dataset`` (one shared option block)
become the client's keywords and the request's fields, with no server."""

from __future__ import annotations

import pytest
from bertserve.client.cli import build_parser, main
from bertserve.client.embed_command import embed_options
from bertserve.client.request import EmbedOptions, embed_request
from bertserve.dataset.options import FeatureOptions
from bertserve.v1 import bertserve_pb2 as pb

LONG_FLAGS = ["--long-text", "chunk", "--chunk-tokens", "128", "--chunk-overlap", "0"]


def request_of(*argv: str) -> pb.EmbedRequest:
    args = build_parser().parse_args(["embed", "a long text", "second", *argv])
    words = embed_options(args)
    words.pop("variant")
    return embed_request(args.texts, None, EmbedOptions.parse(**words))


def test_embed_flags_become_the_request_fields():
    request = request_of(
        *LONG_FLAGS,
        *("--chunk-pooling", "max", "--return-chunks", "--span", "0:6", "--span", "1:1:4"),
    )
    assert request.long_text == pb.LONG_TEXT_CHUNK
    assert (request.chunk_tokens, request.chunk_overlap) == (128, 0)
    assert request.HasField("chunk_overlap")
    assert request.chunk_pooling == pb.CHUNK_POOLING_MAX and request.return_chunks
    assert [(s.text, s.start, s.end) for s in request.spans] == [(0, 0, 6), (1, 1, 4)]
    split = request_of("--split", "sentences", "--long-text", "error")
    assert split.split == pb.SPLIT_SENTENCES and split.long_text == pb.LONG_TEXT_ERROR
    plain = request_of()
    assert plain == pb.EmbedRequest(texts=["a long text", "second"], dtype=pb.DTYPE_FLOAT32)


def test_bad_flags_are_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["embed", "x", "--span", "1-4"])
    assert "'1-4': use START:END or TEXT:START:END" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["embed", "x", "--chunk-pooling", "sum"])
    # a flag that shapes windows without --long-text chunk: the client's own message
    assert main(["embed", "x", "--chunk-tokens", "64", "--target", "127.0.0.1:1"]) == 2
    assert "set it too" in capsys.readouterr().err


def test_bulk_keeps_the_long_text_options_and_refuses_per_call_outputs(tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("one\n")
    out = str(tmp_path / "v.npy")
    for flags in (["--return-chunks"], ["--split", "sentences"], ["--span", "0:2"]):
        argv = ["embed", "--input", str(texts), "-o", out, "--long-text", "chunk", *flags]
        assert main(argv) == 2
        assert "bulk embedding writes one sentence vector per text: drop --" in (
            capsys.readouterr().err
        )


def test_embed_dataset_shares_the_feature_options():
    args = build_parser().parse_args(
        ["embed-dataset", "in.jsonl", "out", "--model", "m", "--repo", "r", *LONG_FLAGS]
    )
    assert not hasattr(args, "return_chunks") and not hasattr(args, "span")
    from bertserve.client.cli_common import long_text_words

    options = FeatureOptions.parse(pooling=args.pooling, **long_text_words(args))
    assert options == FeatureOptions(long_text="chunk", chunk_tokens=128, chunk_overlap=0)
    assert options.client_kwargs()["long_text"] == "chunk"
    assert options.client_kwargs()["chunk_overlap"] == 0
    assert FeatureOptions.from_dict(options.to_dict()) == options


def test_a_dataset_job_without_long_text_keeps_its_identity():
    # outputs begun before the long-text options still resume: unset ones are not named
    assert FeatureOptions().to_dict() == {
        "pooling": None,
        "layers": [],
        "aggregate": None,
        "normalize": False,
        "dtype": "float32",
        "truncate": False,
    }
    with pytest.raises(ValueError, match="chunk_overlap=8 with chunk_tokens=8: use 0..7"):
        FeatureOptions(long_text="chunk", chunk_tokens=8, chunk_overlap=8)
    with pytest.raises(ValueError, match="unknown chunk_pooling 'sum'"):
        FeatureOptions(long_text="chunk", chunk_pooling="sum")
