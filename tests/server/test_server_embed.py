"""Embed, EmbedStream, Tokenize and ModelInfo against an in-process server with the real exported
MiniLM; every answer is compared with a direct onnxruntime run of model.onnx (bad requests:
test_server_errors.py)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from bertserve.server.metrics import BATCH_SIZE
from bertserve.v1 import bertserve_pb2 as pb
from server_helpers import assemble, reference_ids, reference_outputs

TEXTS = ["I love Paris", "The quick brown fox jumps over the lazy dog.", "hello"]
ATOL = 2e-4


def fp32_dir(in_process):
    return in_process.repo / "minilm" / "fp32"


def default_dir(in_process):
    """The folder of the variant the server answers by default on CPU."""
    model = in_process.repo / "minilm"
    return model / "fp32-opt" if (model / "fp32-opt").is_dir() else model / "fp32"


def references(in_process, texts=TEXTS):
    directory = default_dir(in_process)
    return [reference_outputs(directory, reference_ids(directory, t)[0]) for t in texts]


def split(array, lengths):
    return np.split(array, np.cumsum(lengths)[:-1])


async def embed(in_process, **fields) -> tuple[pb.EmbedResponse, dict[str, np.ndarray]]:
    response = await in_process.stub.Embed(pb.EmbedRequest(**fields))
    return response, assemble([response])


async def test_default_request_gives_the_models_default_pooling(in_process):
    response, outputs = await embed(in_process, texts=TEXTS)
    refs = references(in_process)
    assert list(outputs) == ["sentence_embedding"]
    assert list(response.lengths) == [len(r["last_hidden_state"]) for r in refs]
    assert response.lengths[0] == 5  # [CLS] i love paris [SEP]
    expected = np.stack([r["last_hidden_state"].mean(axis=0) for r in refs])  # manifest: mean
    np.testing.assert_allclose(outputs["sentence_embedding"], expected, atol=ATOL)
    assert response.model == "minilm" and response.variant == default_dir(in_process).name


@pytest.mark.parametrize(
    "pooling, expected",
    [
        (pb.POOLING_CLS, lambda r: r["last_hidden_state"][0]),
        (pb.POOLING_POOLER, lambda r: r["pooler_output"]),
        (pb.POOLING_MEAN, lambda r: r["last_hidden_state"].mean(axis=0)),
        (pb.POOLING_MAX, lambda r: r["last_hidden_state"].max(axis=0)),
    ],
)
async def test_pooling_equals_the_direct_run(in_process, pooling, expected):
    _, outputs = await embed(in_process, texts=TEXTS, pooling=pooling)
    refs = references(in_process)
    np.testing.assert_allclose(
        outputs["sentence_embedding"], np.stack([expected(r) for r in refs]), atol=ATOL
    )


async def test_token_embeddings_are_ragged_real_tokens_only(in_process):
    response, outputs = await embed(in_process, texts=TEXTS, token_embeddings=True)
    refs = references(in_process)
    assert "sentence_embedding" not in outputs  # asked for tokens only
    lengths = list(response.lengths)
    assert outputs["token_embeddings"].shape == (sum(lengths), 384)
    for part, ref in zip(split(outputs["token_embeddings"], lengths), refs, strict=True):
        np.testing.assert_allclose(part, ref["last_hidden_state"], atol=ATOL)


async def test_layer_selection_with_negative_indices(in_process):
    _, outputs = await embed(in_process, texts=TEXTS, layers=[0, 3, -1, -2])
    refs = references(in_process)
    assert sorted(outputs) == [
        "hidden_states.0",
        "hidden_states.3",
        "hidden_states.5",
        "hidden_states.6",
    ]
    for layer in (0, 3, 5, 6):
        expected = np.concatenate([r[f"hidden_states.{layer}"] for r in refs])
        np.testing.assert_allclose(outputs[f"hidden_states.{layer}"], expected, atol=ATOL)
    np.testing.assert_allclose(
        outputs["hidden_states.6"],
        np.concatenate([r["last_hidden_state"] for r in refs]),
        atol=ATOL,
    )


async def test_all_layers(in_process):
    _, outputs = await embed(in_process, texts=TEXTS[:1], all_layers=True, pooling=pb.POOLING_CLS)
    ref = references(in_process, TEXTS[:1])[0]
    assert sorted(outputs) == sorted(
        ["sentence_embedding"] + [f"hidden_states.{i}" for i in range(7)]
    )
    for i in range(7):
        np.testing.assert_allclose(
            outputs[f"hidden_states.{i}"], ref[f"hidden_states.{i}"], atol=ATOL
        )


@pytest.mark.parametrize(
    "aggregate, combine",
    [
        (
            pb.AGGREGATION_CONCAT_LAST_4,
            lambda r: np.concatenate([r[f"hidden_states.{i}"] for i in (3, 4, 5, 6)], -1),
        ),
        (pb.AGGREGATION_SUM_LAST_4, lambda r: sum(r[f"hidden_states.{i}"] for i in (3, 4, 5, 6))),
        (pb.AGGREGATION_MEAN_ALL, lambda r: sum(r[f"hidden_states.{i}"] for i in range(1, 7)) / 6),
        (pb.AGGREGATION_LAST, lambda r: r["last_hidden_state"]),
    ],
)
async def test_aggregation_feeds_token_embeddings_and_pooling(in_process, aggregate, combine):
    response, outputs = await embed(
        in_process, texts=TEXTS, token_embeddings=True, pooling=pb.POOLING_CLS, aggregate=aggregate
    )
    refs = references(in_process)
    tokens = np.concatenate([combine(r) for r in refs])
    np.testing.assert_allclose(outputs["token_embeddings"], tokens, atol=ATOL * 4)
    np.testing.assert_allclose(
        outputs["sentence_embedding"], np.stack([combine(r)[0] for r in refs]), atol=ATOL * 4
    )
    width = 4 * 384 if aggregate == pb.AGGREGATION_CONCAT_LAST_4 else 384
    assert outputs["token_embeddings"].shape == (sum(response.lengths), width)


async def test_normalize_gives_unit_vectors_in_the_same_direction(in_process):
    _, plain = await embed(in_process, texts=TEXTS, pooling=pb.POOLING_MEAN)
    _, unit = await embed(in_process, texts=TEXTS, pooling=pb.POOLING_MEAN, normalize=True)
    vectors = plain["sentence_embedding"]
    np.testing.assert_allclose(np.linalg.norm(unit["sentence_embedding"], axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(
        unit["sentence_embedding"],
        vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
        atol=1e-5,
    )


@pytest.mark.parametrize("dtype, rtol", [(pb.DTYPE_FLOAT16, 1e-3), (pb.DTYPE_BFLOAT16, 8e-3)])
async def test_half_precision_dtypes(in_process, dtype, rtol):
    fields = dict(texts=TEXTS, token_embeddings=True, pooling=pb.POOLING_MEAN)
    _, full = await embed(in_process, **fields)
    response, half = await embed(in_process, **fields, dtype=dtype)
    assert {piece.tensor.dtype for piece in response.outputs} == {dtype}
    assert all(len(p.tensor.data) == 2 * np.prod(p.tensor.shape) for p in response.outputs)
    for name in full:
        np.testing.assert_allclose(half[name], full[name], rtol=rtol, atol=1e-3)


async def test_pre_tokenized_sequences_with_masks_and_type_ids(in_process):
    directory = default_dir(in_process)
    ids, types = reference_ids(directory, "I love Paris", "so much")
    sequences = [
        pb.TokenSequence(input_ids=ids, token_type_ids=types),
        pb.TokenSequence(input_ids=[101, 7592, 102], attention_mask=[1, 1, 1]),
    ]
    response, outputs = await embed(in_process, sequences=sequences, token_embeddings=True)
    assert list(response.lengths) == [len(ids), 3]
    parts = split(outputs["token_embeddings"], response.lengths)
    np.testing.assert_allclose(
        parts[0], reference_outputs(directory, ids, types)["last_hidden_state"], atol=ATOL
    )
    np.testing.assert_allclose(
        parts[1], reference_outputs(directory, [101, 7592, 102])["last_hidden_state"], atol=ATOL
    )
    # the same pair sent as texts gives the same numbers
    _, as_text = await embed(
        in_process, texts=["I love Paris"], text_pairs=["so much"], token_embeddings=True
    )
    np.testing.assert_allclose(as_text["token_embeddings"], parts[0], atol=1e-5)


async def test_truncate_cuts_and_reports_the_dropped_tokens(in_process):
    long_text = " ".join(["paris"] * 600)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await embed(in_process, texts=[long_text])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "602 tokens" in error.value.details() and "truncate" in error.value.details()
    response, outputs = await embed(in_process, texts=[long_text, "hello"], truncate=True)
    assert list(response.lengths) == [512, 3]
    assert list(response.truncated) == [90, 0]
    assert outputs["sentence_embedding"].shape == (2, 384)


async def test_timing_counts_real_and_computed_tokens(in_process):
    response, _ = await embed(in_process, texts=TEXTS)
    timing = response.timing
    assert timing.tokens == sum(response.lengths)
    assert timing.computed_tokens >= timing.tokens
    assert timing.inference_ns > 0 and timing.tokenization_ns > 0
    assert timing.total_ns >= timing.inference_ns + timing.queue_ns


async def test_concurrent_callers_with_different_lengths_get_their_own_results(in_process):
    texts = [" ".join(["word"] * n) + f" number {n}" for n in range(1, 40, 3)]
    answers = await asyncio.gather(
        *(
            embed(in_process, texts=[text], token_embeddings=True, pooling=pb.POOLING_MEAN)
            for text in texts
        )
    )
    for text, (response, outputs) in zip(texts, answers, strict=True):
        ref = references(in_process, [text])[0]
        assert list(response.lengths) == [len(ref["last_hidden_state"])]
        np.testing.assert_allclose(outputs["token_embeddings"], ref["last_hidden_state"], atol=ATOL)
        np.testing.assert_allclose(
            outputs["sentence_embedding"][0], ref["last_hidden_state"].mean(0), atol=ATOL
        )
    # whether they shared batches depends on when each arrived: the planner's grouping is tested
    # deterministically in test_server_batcher.py; here each caller must get its own answer


async def test_a_big_answer_on_embed_stream_arrives_in_chunks_under_4mb(in_process):
    texts = [
        f"sentence number {i} says something about Paris and the weather today" for i in range(60)
    ]
    requests = [
        pb.EmbedRequest(id="big", texts=texts, all_layers=True, token_embeddings=True),
        pb.EmbedRequest(id="small", texts=["I love Paris"]),
        pb.EmbedRequest(id="bad", texts=["x"], layers=[42]),
        pb.EmbedRequest(id="", texts=["no id"]),
    ]
    chunks: dict[str, list[pb.EmbedResponse]] = {}
    async for response in in_process.stub.EmbedStream(iter(requests)):
        assert response.ByteSize() < 4 * 1024 * 1024
        chunks.setdefault(response.id, []).append(response)
    assert len(chunks["big"]) > 1
    outputs = assemble(chunks["big"])
    _, unary = await embed(in_process, texts=texts[:5], all_layers=True)
    rows = sum(chunks["big"][0].lengths[:5])
    for layer in range(7):
        np.testing.assert_allclose(
            outputs[f"hidden_states.{layer}"][:rows], unary[f"hidden_states.{layer}"], atol=1e-5
        )
    assert outputs["token_embeddings"].shape == (sum(chunks["big"][0].lengths), 384)
    _, small = await embed(in_process, texts=["I love Paris"])
    np.testing.assert_allclose(
        assemble(chunks["small"])["sentence_embedding"], small["sentence_embedding"], atol=1e-6
    )
    assert chunks["bad"][0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "layers[0]=42" in chunks["bad"][0].error.message
    assert chunks[""][0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "id" in chunks[""][0].error.message


async def test_unary_embed_over_4mb_says_to_use_embed_stream(in_process):
    texts = [
        f"sentence number {i} says something about Paris and the weather today" for i in range(60)
    ]
    labels = [v.batcher.name for v in in_process.server.registry.loaded.values()]

    def computed() -> float:  # sequences computed: the batch-size histograms' sums
        return sum(BATCH_SIZE.labels(label)._sum.get() for label in labels)

    before = computed()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await embed(in_process, texts=texts, all_layers=True)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "EmbedStream" in error.value.details()
    assert computed() == before  # refused before computing


async def test_pytorch_agrees_on_mean_pooled_sentence_vectors(in_process, minilm_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    _, outputs = await embed(in_process, texts=TEXTS, pooling=pb.POOLING_MEAN, all_layers=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    model = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
        out = model(**batch, output_hidden_states=True)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = ((out.last_hidden_state * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(outputs["sentence_embedding"], expected, atol=1e-4)
    lengths = batch["attention_mask"].sum(1).tolist()
    layer2 = np.concatenate([out.hidden_states[2][i, :n].numpy() for i, n in enumerate(lengths)])
    np.testing.assert_allclose(outputs["hidden_states.2"], layer2, atol=1e-4)


async def test_tokenize_the_classic_walk_through(in_process):
    response = await in_process.stub.Tokenize(pb.TokenizeRequest(texts=["I love Paris"], pad_to=7))
    encoding = response.encodings[0]
    assert list(encoding.tokens) == ["[CLS]", "i", "love", "paris", "[SEP]", "[PAD]", "[PAD]"]
    assert list(encoding.input_ids) == [101, 1045, 2293, 3000, 102, 0, 0]
    assert list(encoding.attention_mask) == [1, 1, 1, 1, 1, 0, 0]
    assert list(encoding.token_type_ids) == [0] * 7
    assert list(encoding.special_tokens_mask) == [True, False, False, False, True, True, True]
    assert [(o.start, o.end) for o in encoding.offsets][1:4] == [(0, 1), (2, 6), (7, 12)]
    pair = await in_process.stub.Tokenize(
        pb.TokenizeRequest(texts=["I love Paris"], text_pairs=["me too"])
    )
    assert list(pair.encodings[0].token_type_ids) == [0] * 5 + [1] * 3
    cut = await in_process.stub.Tokenize(
        pb.TokenizeRequest(texts=[" ".join(["paris"] * 600)], truncate=True)
    )
    assert len(cut.encodings[0].input_ids) == 512 and cut.encodings[0].truncated == 90


async def test_model_info_and_list_models_come_from_the_manifests(in_process):
    import json

    manifest = json.loads((fp32_dir(in_process) / "manifest.json").read_text())
    info = (await in_process.stub.ModelInfo(pb.ModelInfoRequest())).model
    assert (info.name, info.num_layers, info.hidden_size, info.num_heads) == ("minilm", 6, 384, 12)
    assert info.max_length == manifest["max_length"] and info.vocab_size == 30522 and info.lowercase
    assert info.random_weights is False and info.is_default
    assert info.default_pooling == pb.POOLING_MEAN
    assert info.default_variant == default_dir(in_process).name
    default = next(v for v in info.variants if v.name == info.default_variant)
    assert (
        default.loaded
        and default.execution_provider == "CPUExecutionProvider"
        and default.size_bytes > 0
    )
    listed = await in_process.stub.ListModels(pb.ListModelsRequest())
    assert [m.name for m in listed.models] == ["minilm"]


async def test_another_variant_loads_on_first_use(in_process):
    model_dir = in_process.repo / "minilm"
    others = [
        v
        for v in ("int8", "fp32")
        if (model_dir / v).is_dir() and v != default_dir(in_process).name
    ]
    if not others:
        pytest.skip("the repository has one variant only")
    response, outputs = await embed(
        in_process, texts=TEXTS, variant=others[0], normalize=True, pooling=pb.POOLING_MEAN
    )
    _, default = await embed(in_process, texts=TEXTS, normalize=True, pooling=pb.POOLING_MEAN)
    assert response.variant == others[0]
    cosine = (outputs["sentence_embedding"] * default["sentence_embedding"]).sum(1)
    assert cosine.min() > 0.95
    info = (await in_process.stub.ModelInfo(pb.ModelInfoRequest(model="minilm"))).model
    assert next(v for v in info.variants if v.name == others[0]).loaded
