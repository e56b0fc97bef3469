"""Long documents (issue 19) over both front doors of one real server: the same long text
through bertserve.v1 Embed, EmbedStream and the Open Inference Protocol's ModelInfer gives the
same chunk, pooled, stitched-token and span vectors; ModelInfo and ModelConfig state the window
and the defaults; bad options are refused in each protocol's words."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc

# A real long text: CPython's own documentation of the with statement (shipped with Python),
# then Korean and emoji, whose offsets must still be code points.
KOREAN = "한국어 문장도 있습니다. 이모지도 🎉🙂 있어요!"
CHUNK_TOKENS, CHUNK_OVERLAP = 128, 16
WIRE = {pb.DTYPE_FLOAT32: "<f4", pb.DTYPE_INT32: "<i4", pb.DTYPE_INT64: "<i8"}
V2_WIRE = {"FP32": "<f4", "INT32": "<i4", "INT64": "<i8"}
OUTPUTS = (
    "sentence_embedding",
    "token_embeddings",
    "chunk_embeddings",
    "chunk_spans",
    "span_embeddings",
    "span_offsets",
)


@pytest.fixture(scope="module")
def text() -> str:
    from pydoc_data.topics import topics

    return topics["with"] + "\n\n" + KOREAN


@pytest.fixture(scope="module")
def channel(live_server):
    with grpc.insecure_channel(live_server.target) as channel:
        yield channel


def spans_of(text: str) -> list[tuple[int, int, int]]:
    """Three spans: the first line, a stretch in the middle, the Korean sentence at the end."""
    middle = len(text) // 2
    korean = text.index(KOREAN)
    return [(0, 0, text.index("\n")), (0, middle, middle + 300), (0, korean, len(text))]


def v1_request(text: str, **changes) -> pb.EmbedRequest:
    request = pb.EmbedRequest(
        id="long",
        texts=[text],
        pooling=pb.POOLING_MEAN,
        token_embeddings=True,
        long_text=pb.LONG_TEXT_CHUNK,
        chunk_tokens=CHUNK_TOKENS,
        chunk_overlap=CHUNK_OVERLAP,
        return_chunks=True,
        spans=[pb.Span(text=t, start=s, end=e) for t, s, e in spans_of(text)],
    )
    for name, value in changes.items():
        setattr(request, name, value)
    return request


def v1_outputs(messages: list[pb.EmbedResponse]) -> dict[str, np.ndarray]:
    """Each output whole from its pieces (row ranges), by its wire dtype."""
    rows: dict[str, list[tuple[int, np.ndarray]]] = {}
    for message in messages:
        for piece in message.outputs:
            tensor = piece.tensor
            array = np.frombuffer(tensor.data, WIRE[tensor.dtype]).reshape(list(tensor.shape))
            rows.setdefault(piece.name, []).append((piece.row_offset, array))
    return {
        name: np.concatenate([a for _, a in sorted(parts, key=lambda p: p[0])])
        for name, parts in rows.items()
    }


def v2_request(text: str, spans: list[tuple[int, int, int]] | None) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name="minilm.features", id="long")
    tensor = request.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(text.encode())
    if spans is not None:
        rows = request.inputs.add(name="SPANS", datatype="INT32", shape=[len(spans), 3])
        rows.contents.int_contents.extend(np.asarray(spans).ravel().tolist())
    parameters = request.parameters
    parameters["pooling"].string_param = "mean"
    parameters["long_text"].string_param = "chunk"
    parameters["chunk_tokens"].int64_param = CHUNK_TOKENS
    parameters["chunk_overlap"].int64_param = CHUNK_OVERLAP
    return request


def v2_outputs(answer: v2.ModelInferResponse) -> dict[str, np.ndarray]:
    return {
        output.name: np.frombuffer(raw, V2_WIRE[output.datatype]).reshape(list(output.shape))
        for output, raw in zip(answer.outputs, answer.raw_output_contents, strict=True)
    }


def test_model_info_and_config_state_the_window_and_defaults(channel):
    info = bertserve_pb2_grpc.BertServiceStub(channel).ModelInfo(
        pb.ModelInfoRequest(model="minilm")
    )
    model = info.model
    assert model.max_length == 512
    # windows of max_length - [CLS] - [SEP] content tokens, overlapping by an eighth
    assert (model.chunk_tokens, model.chunk_overlap) == (510, 63)
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    config = stub.ModelConfig(v2.ModelConfigRequest(name="minilm.features")).config
    assert config.parameters["chunk_tokens"].string_value == "510"
    assert config.parameters["chunk_overlap"].string_value == "63"
    metadata = stub.ModelMetadata(v2.ModelMetadataRequest(name="minilm.features"))
    assert {t.name: t.datatype for t in metadata.inputs}["SPANS"] == "INT64"
    outputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.outputs}
    assert outputs["chunk_spans"] == ("INT32", [-1, 3])
    assert outputs["span_embeddings"] == ("FP32", [-1, 384])


def test_one_long_text_gives_the_same_vectors_over_every_door(channel, text):
    bert = bertserve_pb2_grpc.BertServiceStub(channel)
    unary = v1_outputs([bert.Embed(v1_request(text), timeout=120)])
    streamed = list(bert.EmbedStream(iter([v1_request(text)]), timeout=120))
    assert streamed[-1].last and not any(m.HasField("error") for m in streamed)
    stream = v1_outputs(streamed)
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = v2_request(text, spans_of(text))
    request.outputs.extend(v2.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in OUTPUTS)
    request.outputs.add(name="lengths")
    infer = v2_outputs(stub.ModelInfer(request, timeout=120))

    tokens = int(infer["lengths"][0])
    assert tokens > 3 * CHUNK_TOKENS  # long enough for several windows
    assert list(streamed[0].lengths) == [tokens] and unary["token_embeddings"].shape[0] == tokens
    assert infer["token_embeddings"].shape == (1, tokens, 384)
    infer["token_embeddings"] = infer["token_embeddings"][0]  # v2 pads a batch of one: no pad
    chunks = unary["chunk_spans"]
    assert chunks.dtype == np.int32 and chunks.shape[1] == 3 and len(chunks) >= 4
    assert infer["chunk_spans"].dtype == np.int32
    for name in OUTPUTS:
        for door, outputs in (("EmbedStream", stream), ("ModelInfer", infer)):
            assert outputs[name].shape == unary[name].shape, (door, name)
            np.testing.assert_allclose(outputs[name], unary[name], atol=1e-5, err_msg=door + name)
    # the windows cover the whole text in order, in code points (Korean and emoji included)
    assert (chunks[0, 0], chunks[0, 1]) == (0, 0) and chunks[-1, 2] == len(text)
    assert all(chunks[i, 1] < chunks[i + 1, 1] < chunks[i, 2] for i in range(len(chunks) - 1))
    assert unary["span_offsets"].tolist() == [list(s) for s in spans_of(text)]


def test_the_first_chunk_is_its_window_embedded_alone(channel, text, live_server):
    """Not only the same over every door, but right: the first window's vector is the mean
    pooled embedding of [CLS], its first CHUNK_TOKENS tokens and [SEP], sent as ids."""
    from tokenizers import Tokenizer

    # the package's own tokenizer, whole (Tokenize refuses a text over the window)
    tokenizer = Tokenizer.from_file(str(live_server.repo / "minilm/fp32-opt/tokenizer.json"))
    tokenizer.no_truncation()
    ids = tokenizer.encode(text).ids
    bert = bertserve_pb2_grpc.BertServiceStub(channel)
    window = pb.TokenSequence(input_ids=[ids[0], *ids[1 : 1 + CHUNK_TOKENS], ids[-1]])
    alone = bert.Embed(pb.EmbedRequest(sequences=[window], pooling=pb.POOLING_MEAN))
    (expected,) = v1_outputs([alone]).values()
    chunked = v1_outputs([bert.Embed(v1_request(text), timeout=120)])
    np.testing.assert_allclose(chunked["chunk_embeddings"][0], expected[0], atol=1e-5)


def test_split_sentences_gives_the_same_spans_over_both_doors(channel, text):
    bert = bertserve_pb2_grpc.BertServiceStub(channel)
    request = v1_request(text, split=pb.SPLIT_SENTENCES, return_chunks=False)
    del request.spans[:]
    unary = v1_outputs([bert.Embed(request, timeout=120)])
    offsets = unary["span_offsets"]
    assert len(offsets) > 5 and offsets[-1].tolist() == [0, text.index("이모지도"), len(text)]
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    v2_split = v2_request(text, None)
    v2_split.parameters["split"].string_param = "sentences"
    infer = v2_outputs(stub.ModelInfer(v2_split, timeout=120))  # no outputs named: with spans
    assert set(infer) == {"sentence_embedding", "span_embeddings", "span_offsets"}
    np.testing.assert_array_equal(infer["span_offsets"], offsets)
    np.testing.assert_allclose(infer["span_embeddings"], unary["span_embeddings"], atol=1e-5)


def refused(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)
    return caught.value.code(), caught.value.details()


def test_bad_options_are_refused_in_each_protocols_words(channel, text):
    bert = bertserve_pb2_grpc.BertServiceStub(channel)
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    invalid = grpc.StatusCode.INVALID_ARGUMENT

    code, message = refused(bert.Embed, v1_request(text, chunk_overlap=CHUNK_TOKENS))
    assert code == invalid and message.startswith(f"chunk_overlap={CHUNK_TOKENS}"), message
    assert f"{CHUNK_TOKENS - 1}" in message  # the allowed range
    overlap = v2_request(text, spans_of(text))
    overlap.parameters["chunk_overlap"].int64_param = CHUNK_TOKENS
    code, message = refused(stub.ModelInfer, overlap)
    assert code == invalid and message.startswith(f"parameters['chunk_overlap']={CHUNK_TOKENS}"), (
        message
    )

    past = v1_request(text)
    past.spans[0].end = len(text) + 5
    code, message = refused(bert.Embed, past)
    assert code == invalid and message.startswith("spans[0]"), message
    outside = v2_request(text, [(0, 0, len(text) + 5)])
    outside.outputs.add(name="span_embeddings")
    code, message = refused(stub.ModelInfer, outside)
    assert code == invalid and message.startswith("SPANS[0]"), message
