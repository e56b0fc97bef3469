"""A property-based fuzzer (hypothesis) against a live ``bertserve serve`` process.

Garbage and truncated protobuf bytes, invalid UTF-8, empty and huge batches, empty and
megabyte strings, out-of-vocabulary ids, ragged masks and type ids, unknown layers, models,
variants, poolings, aggregations and dtypes, absurd combinations, and the same on
EmbedStream. Every answer must carry a documented code with a message; the server must
never crash nor answer INTERNAL or UNKNOWN; and a well-formed request sent every few bad
ones must still get exactly the right answer.

``BERTSERVE_FUZZ_SCALE=10`` multiplies every count (the soak script does so).
"""

from __future__ import annotations

import collections
import os

import grpc
import numpy as np
import pytest
from bertserve.client.tensors import tensor_to_numpy
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1 import bertserve_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import start_server

SCALE = float(os.environ.get("BERTSERVE_FUZZ_SCALE", "1"))
# Codes a bad request may get, each documented in bertserve.proto / the README.
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
PROBE_EVERY = 25
METHODS = ("Embed", "Tokenize", "Classify", "ModelInfo", "ListModels")
CODES = {code.value[0]: code for code in grpc.StatusCode}
# Documented limits (server/core/request.py, the model's manifest), and the fuzz server's
MAX_ID_BYTES = MAX_NAME_BYTES = 256
MAX_LAYER_ENTRIES = 256
MAX_LENGTH = 512  # minilm's tokens per sequence
MAX_SEQUENCES = 64  # --max-request-sequences


class Fuzz:
    """A channel to the server under test, the reference answer, and what was seen."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        self.stub = bertserve_pb2_grpc.BertServiceStub(self.channel)
        self.raw = {
            name: self.channel.unary_unary(f"/bertserve.v1.BertService/{name}") for name in METHODS
        }
        self.raw_stream = self.channel.stream_stream("/bertserve.v1.BertService/EmbedStream")
        self.codes: collections.Counter[str] = collections.Counter()
        self.sent = 0
        self.probes = 0
        self.reference = self._probe_answer()

    def _probe_answer(self) -> np.ndarray:
        request = pb.EmbedRequest(texts=["I love Paris", "a probe between the bad ones"])
        (piece,) = self.stub.Embed(request, timeout=60).outputs
        return tensor_to_numpy(piece.tensor)

    def seen(self, code: grpc.StatusCode, details: str) -> None:
        self.sent += 1
        self.codes[code.name] += 1
        assert code in DOCUMENTED, f"{code.name}: {details}"
        if code != grpc.StatusCode.OK:
            assert details and len(details) > 10, f"{code.name} without a helpful message"
        if self.sent % PROBE_EVERY == 0:
            self.probes += 1
            np.testing.assert_allclose(self._probe_answer(), self.reference, atol=1e-6)

    def call(self, method, request: object) -> None:
        try:
            method(request, timeout=60)
            self.seen(grpc.StatusCode.OK, "")
        except grpc.RpcError as error:
            self.seen(error.code(), error.details() or "")

    def stream(self, requests: list[pb.EmbedRequest], garbage: list[bytes]) -> None:
        """Requests (then garbage) on one EmbedStream: every request gets exactly one complete
        answer or in-band error, or the stream ends with a documented code."""
        messages = [r.SerializeToString() for r in requests] + garbage
        answered: collections.Counter[str] = collections.Counter()
        try:
            for chunk in self.raw_stream(iter(messages), timeout=120):
                response = pb.EmbedResponse.FromString(chunk)
                if response.HasField("error") and response.error.code:
                    self.seen(CODES[response.error.code], response.error.message)
                    answered[response.id] += 1
                elif response.last:
                    self.seen(grpc.StatusCode.OK, "")
                    answered[response.id] += 1
            self.codes["stream OK"] += 1
        except grpc.RpcError as error:
            self.seen(error.code(), error.details() or "")
            return
        expected = collections.Counter(r.id for r in requests)
        for data in garbage:  # bytes that happen to decode (b"" is an empty request) are requests
            try:
                expected[pb.EmbedRequest.FromString(data).id] += 1
            except Exception:  # noqa: BLE001 - not a request: the stream would have failed
                pass
        assert answered == expected, answered


@pytest.fixture(scope="module")
def fuzz(model_repo, figures):
    # a low max_request_sequences: the fuzzers reach it (and one past it) cheaply
    server = start_server(
        model_repo, "--max-batch-size", "16", "--max-request-sequences", str(MAX_SEQUENCES)
    )
    fuzz = Fuzz(server.target)
    yield fuzz
    fuzz.channel.close()
    alive = server.process.poll() is None
    code = server.stop()
    figures["fuzz"] = {
        "requests": fuzz.sent,
        "probes_correct": fuzz.probes,
        "codes": dict(fuzz.codes),
        "server_crashed": not alive,
        "exit_code_after_sigterm": code,
    }
    assert alive and code == 0, server.output()[-3000:]


SETTINGS = dict(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

# -- strategies ------------------------------------------------------------------------------

SPECIAL_TEXTS = [
    "",
    " ",
    "\x00",
    "\ufffd" * 3,
    "🙂 emoji",
    "[CLS] [SEP] [PAD] [MASK]",
    "a\rb\nc\td",
    "Ünïcödé ñ 中文 العربية",
]
texts = st.lists(st.one_of(st.text(max_size=40), st.sampled_from(SPECIAL_TEXTS)), max_size=6)
uint32 = st.integers(0, 2**32 - 1)
ids = st.one_of(st.integers(0, 30600), uint32)
names = st.sampled_from(["", "minilm", "nope", "../minilm", "minilm/../x", "/etc/passwd", "\x00"])
variants = st.sampled_from(["", "fp32", "fp32-opt", "int8", "fp16", "fp64", "../fp32", "."])
small_enum = st.integers(-3, 12)


@st.composite
def sequences(draw) -> pb.TokenSequence:
    length = draw(st.integers(0, 20))
    sequence = pb.TokenSequence(input_ids=draw(st.lists(ids, min_size=length, max_size=length)))
    mask_length = draw(st.sampled_from([0, length, max(0, length - 1), length + 1]))
    sequence.attention_mask.extend(
        draw(st.lists(st.integers(0, 3), min_size=mask_length, max_size=mask_length))
    )
    types_length = draw(st.sampled_from([0, length, length + 2]))
    sequence.token_type_ids.extend(
        draw(st.lists(st.integers(0, 3), min_size=types_length, max_size=types_length))
    )
    return sequence


@st.composite
def embed_requests(draw) -> pb.EmbedRequest:
    request = pb.EmbedRequest(
        id=draw(st.text(max_size=8)),
        model=draw(names),
        variant=draw(variants),
        token_embeddings=draw(st.booleans()),
        pooling=draw(small_enum),
        layers=draw(st.lists(st.integers(-(2**31), 2**31 - 1) | st.integers(-9, 9), max_size=4)),
        all_layers=draw(st.booleans()),
        aggregate=draw(small_enum),
        normalize=draw(st.booleans()),
        dtype=draw(small_enum),
        truncate=draw(st.booleans()),
    )
    kind = draw(st.sampled_from(["texts", "sequences", "both", "none", "huge", "long"]))
    if kind in ("texts", "both"):
        request.texts.extend(draw(texts))
        pairs = draw(st.sampled_from([0, len(request.texts), len(request.texts) + 1]))
        request.text_pairs.extend(
            draw(st.lists(st.text(max_size=20), min_size=pairs, max_size=pairs))
        )
    if kind in ("sequences", "both"):
        request.sequences.extend(draw(st.lists(sequences(), max_size=4)))
    if kind == "huge":  # over max_request_sequences
        request.texts.extend(["a"] * 70_000)
    if kind == "long":  # over the model's 512 tokens; rare, since each costs real work
        rare = draw(st.integers(0, 99))
        if rare < 4:
            request.texts.append("word " * 600)
        elif rare == 4:
            request.texts.append("megabyte " * 116_000)
    return request


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    """A valid message of some method, then truncated, bit-flipped or given invalid UTF-8."""
    method = draw(st.sampled_from(["Embed", "Tokenize", "Classify", "ModelInfo"]))
    message = {
        "Embed": pb.EmbedRequest(id="x", texts=["I love Paris", "hello"], layers=[-1]),
        "Tokenize": pb.TokenizeRequest(texts=["I love Paris"], pad_to=8),
        "Classify": pb.ClassifyRequest(texts=["great"], top_k=1),
        "ModelInfo": pb.ModelInfoRequest(model="minilm"),
    }[method]
    data = bytearray(message.SerializeToString())
    how = draw(st.sampled_from(["truncate", "flip", "utf8", "append"]))
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
    elif how == "utf8":  # a string field holding bytes that are not UTF-8
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80"]))
        field = {"Embed": 4, "Tokenize": 2, "Classify": 4, "ModelInfo": 1}[method]
        data += bytes([field << 3 | 2, len(bad)]) + bad
    else:
        data += draw(st.binary(min_size=1, max_size=16))
    return method, bytes(data)


# -- the fuzzers -----------------------------------------------------------------------------


@settings(max_examples=int(2700 * SCALE), **SETTINGS)
@given(method=st.sampled_from(METHODS), data=st.binary(max_size=300))
def test_garbage_bytes(fuzz, method, data):
    fuzz.call(fuzz.raw[method], data)


@settings(max_examples=int(2000 * SCALE), **SETTINGS)
@given(case=mutated())
def test_mutated_messages(fuzz, case):
    method, data = case
    fuzz.call(fuzz.raw[method], data)


@settings(max_examples=int(3000 * SCALE), **SETTINGS)
@given(request=embed_requests())
def test_malformed_embed_requests(fuzz, request):
    fuzz.call(fuzz.stub.Embed, request)


@settings(max_examples=int(1000 * SCALE), **SETTINGS)
@given(
    texts=texts,
    pairs=st.lists(st.text(max_size=20), max_size=7),
    pad_to=st.one_of(st.integers(0, 600), uint32),
    truncate=st.booleans(),
    model=names,
)
def test_malformed_tokenize_requests(fuzz, texts, pairs, pad_to, truncate, model):
    request = pb.TokenizeRequest(
        model=model, texts=texts, text_pairs=pairs, pad_to=pad_to, truncate=truncate
    )
    fuzz.call(fuzz.stub.Tokenize, request)


@settings(max_examples=int(600 * SCALE), **SETTINGS)
@given(
    requests=st.lists(embed_requests(), min_size=1, max_size=4),
    garbage=st.lists(st.binary(max_size=40), max_size=1),
)
def test_malformed_streams(fuzz, requests, garbage):
    fuzz.stream(requests, garbage)


# -- fields at their limits: one below, at, one past; the exact code is known ---------------


def sized(size: int) -> str:
    """A str of ``size`` UTF-8 bytes, mostly 2-byte characters (bytes are counted, not
    characters)."""
    return "é" * (size // 2) + "a" * (size % 2)


@st.composite
def limit_cases(draw) -> tuple[str, object, grpc.StatusCode | None, object]:
    """(method, request, the code it must get (None: any documented one), a check of an OK
    answer) for one field one below, at or one past its limit; everything else valid."""
    ok, bad = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
    near = st.sampled_from([-1, 0, 1])
    field = draw(
        st.sampled_from(
            ["id", "model", "variant", "layers", "texts", "sequences", "long", "ids", "pad_to"]
            + ["tokenize_texts", "tokenize_long"]
        )
    )
    delta = draw(near)
    over = delta > 0
    request = pb.EmbedRequest(id="x", texts=["I love Paris"])
    if field == "id":
        request.id = sized(MAX_ID_BYTES + delta)
        return "Embed", request, bad if over else ok, lambda a: a.id == request.id
    if field == "model":  # no such model: NOT_FOUND, unless too long
        request.model = sized(MAX_NAME_BYTES + delta)
        return "Embed", request, bad if over else grpc.StatusCode.NOT_FOUND, None
    if field == "variant":  # no such variant of minilm is INVALID_ARGUMENT too
        request.variant = sized(MAX_NAME_BYTES + delta)
        return "Embed", request, bad, None
    if field == "layers":  # repeats of valid layers: one layer each
        layer = draw(st.sampled_from([-1, 0, 6, -7]))
        request.layers.extend([layer] * (MAX_LAYER_ENTRIES + delta))
        return "Embed", request, bad if over else ok, lambda a: len(a.outputs) == 1
    if field == "texts":
        del request.texts[:]
        request.texts.extend(["a"] * (MAX_SEQUENCES + delta))
        return (
            "Embed",
            request,
            bad if over else ok,
            lambda a: len(a.lengths) == MAX_SEQUENCES + delta,
        )
    if field == "sequences":
        del request.texts[:]
        ids = pb.TokenSequence(input_ids=[101, 7592, 102])
        request.sequences.extend([ids] * (MAX_SEQUENCES + delta))
        return (
            "Embed",
            request,
            bad if over else ok,
            lambda a: len(a.lengths) == MAX_SEQUENCES + delta,
        )
    truncate = draw(st.booleans())
    tokens = MAX_LENGTH + delta
    fits = not over or truncate
    if field == "long":  # "word" is one token; [CLS] and [SEP] make two more
        request = pb.EmbedRequest(texts=[" ".join(["word"] * (tokens - 2))], truncate=truncate)
        return (
            "Embed",
            request,
            ok if fits else bad,
            lambda a: (
                list(a.lengths) == [min(tokens, MAX_LENGTH)]
                and list(a.truncated) == [tokens - min(tokens, MAX_LENGTH)]
            ),
        )
    if field == "ids":
        sequence = pb.TokenSequence(input_ids=[101] + [2773] * (tokens - 2) + [102])
        request = pb.EmbedRequest(sequences=[sequence], truncate=truncate)
        return (
            "Embed",
            request,
            ok if fits else bad,
            lambda a: list(a.lengths) == [min(tokens, MAX_LENGTH)],
        )
    if field == "pad_to":
        request = pb.TokenizeRequest(texts=["I love Paris"], pad_to=MAX_LENGTH + delta)
        return (
            "Tokenize",
            request,
            bad if over else ok,
            lambda a: len(a.encodings[0].input_ids) == MAX_LENGTH + delta,
        )
    if field == "tokenize_texts":
        request = pb.TokenizeRequest(texts=["a"] * (MAX_SEQUENCES + delta), pad_to=8)
        return (
            "Tokenize",
            request,
            bad if over else ok,
            lambda a: len(a.encodings) == MAX_SEQUENCES + delta,
        )
    text = " ".join(["word"] * (tokens - 2))
    pad_to = draw(st.sampled_from([0, MAX_LENGTH]))
    request = pb.TokenizeRequest(texts=[text], truncate=truncate, pad_to=pad_to)
    return (
        "Tokenize",
        request,
        ok if fits else bad,
        lambda a: (
            len(a.encodings[0].input_ids) == max(pad_to, min(tokens, MAX_LENGTH))
            and a.encodings[0].truncated == tokens - min(tokens, MAX_LENGTH)
        ),
    )


@settings(max_examples=int(120 * SCALE), **SETTINGS)
@given(case=limit_cases())
def test_fields_at_their_limits(fuzz, case):
    method, request, expected, check = case
    try:
        answer = getattr(fuzz.stub, method)(request, timeout=60)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        answer, code, details = None, error.code(), error.details() or ""
        assert len(details) < 2048, details[:300]
    fuzz.seen(code, details)
    assert expected is None or code == expected, (code, expected, details[:300])
    if answer is not None and check is not None:
        assert check(answer), answer


def test_enough_requests_were_fuzzed(fuzz):
    assert fuzz.sent >= 10_000 * SCALE, fuzz.sent  # what CI runs: 10,000 at least
    assert fuzz.probes >= fuzz.sent // PROBE_EVERY - 1
