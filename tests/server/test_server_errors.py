"""Bad bertserve.v1 requests against an in-process server with the real exported MiniLM: each
gets its status code and a message naming the field, the value and what is allowed."""

from __future__ import annotations

import grpc
import pytest
from bertserve.v1 import bertserve_pb2 as pb

ERRORS = [
    (dict(), "INVALID_ARGUMENT", "empty input"),
    (
        dict(texts=["a"], sequences=[pb.TokenSequence(input_ids=[101])]),
        "INVALID_ARGUMENT",
        "exactly one",
    ),
    (dict(sequences=[pb.TokenSequence()]), "INVALID_ARGUMENT", "sequences[0].input_ids: empty"),
    (
        dict(sequences=[pb.TokenSequence(input_ids=[101, 40000, 102])]),
        "INVALID_ARGUMENT",
        "input_ids[1]=40000",
    ),
    (
        dict(sequences=[pb.TokenSequence(input_ids=[101, 102], attention_mask=[1])]),
        "INVALID_ARGUMENT",
        "attention_mask: 1 values for 2",
    ),
    (
        dict(sequences=[pb.TokenSequence(input_ids=[101, 102], token_type_ids=[0, 5])]),
        "INVALID_ARGUMENT",
        "token_type_ids[1]=5",
    ),
    (dict(sequences=[pb.TokenSequence(input_ids=[101] * 513)]), "INVALID_ARGUMENT", "513 tokens"),
    (dict(texts=["a", "b"], text_pairs=["c"]), "INVALID_ARGUMENT", "text_pairs: 1 given for 2"),
    (dict(texts=["a", ""]), "INVALID_ARGUMENT", "texts[1]: empty string"),
    (
        dict(texts=["a"], layers=[7]),
        "INVALID_ARGUMENT",
        "layers[0]=7: no such layer; allowed -7..6",
    ),
    (dict(texts=["a"], layers=[-8]), "INVALID_ARGUMENT", "layers[0]=-8"),
    (dict(texts=["a"], variant="fp64"), "INVALID_ARGUMENT", "variant='fp64'"),
    (dict(texts=["a"], dtype=pb.DTYPE_INT64), "INVALID_ARGUMENT", "dtype=DTYPE_INT64"),
    (dict(texts=["a"], pooling=pb.POOLING_NONE), "INVALID_ARGUMENT", "no output asked for"),
    (dict(texts=["a"], model="bert-huge"), "NOT_FOUND", "model 'bert-huge' not found"),
]


@pytest.mark.parametrize("fields, code, message", ERRORS)
async def test_bad_embed_requests_get_their_code_and_a_clear_message(
    in_process, fields, code, message
):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await in_process.stub.Embed(pb.EmbedRequest(**fields))
    assert error.value.code() == getattr(grpc.StatusCode, code)
    assert message in error.value.details()


async def test_other_rpcs_errors(in_process):
    stub = in_process.stub
    cases = [
        (stub.Tokenize(pb.TokenizeRequest()), grpc.StatusCode.INVALID_ARGUMENT, "texts: empty"),
        (
            stub.Tokenize(pb.TokenizeRequest(texts=["a"], model="nope")),
            grpc.StatusCode.NOT_FOUND,
            "'nope'",
        ),
        (
            stub.Tokenize(pb.TokenizeRequest(texts=["a " * 600])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "truncate",
        ),
        (stub.ModelInfo(pb.ModelInfoRequest(model="nope")), grpc.StatusCode.NOT_FOUND, "'nope'"),
        (
            stub.Classify(pb.ClassifyRequest(texts=["a"])),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no classification head",
        ),
    ]
    for call, code, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == code
        assert message in error.value.details()
