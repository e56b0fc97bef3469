"""The v2 service through our own generated stubs: every refusal's status code and message,
typed contents beside raw ones, the shared limits, auth, metrics, overload and draining."""

from __future__ import annotations

import asyncio
import struct

import grpc
import numpy as np
import pytest
from bertserve.client import Client
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from bertserve.server.app import create_server
from bertserve.server.config import BatchSettings, ServerConfig
from servers import scrape, start_server, total

Input = v2.ModelInferRequest.InferInputTensor
Output = v2.ModelInferRequest.InferRequestedOutputTensor
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def packed(*texts: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(t)) + t for t in texts)


FULL = "minilm.features"  # every input and output of minilm (minilm: TEXT -> sentence_embedding)


def text_request(
    *texts: str, outputs=("sentence_embedding",), model=FULL, **parameters
) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(
        model_name=model,
        model_version="fp32-opt",
        inputs=[Input(name="TEXT", datatype="BYTES", shape=[len(texts)])],
        raw_input_contents=[packed(*(t.encode() for t in texts))],
        outputs=[Output(name=name) for name in outputs],
    )
    for name, value in parameters.items():
        kind = {bool: "bool_param", int: "int64_param", str: "string_param"}[type(value)]
        setattr(request.parameters[name], kind, value)
    return request


def ids_request(ids, mask=None, types=None, datatype="INT64") -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=FULL, model_version="fp32-opt")
    for name, values in (("input_ids", ids), ("attention_mask", mask), ("token_type_ids", types)):
        if values is not None:
            array = np.asarray(values, dtype=np.int64)
            request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
            request.raw_input_contents.append(array.tobytes())
    return request


@pytest.fixture(scope="module")
def stub(classifier_server):
    with grpc.insecure_channel(classifier_server.target) as channel:
        yield grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


def refused(call, request, code=INVALID) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=60)
    assert error.value.code() == code, error.value.details()
    return error.value.details()


def sentence(response: v2.ModelInferResponse) -> np.ndarray:
    (output,) = response.outputs
    return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(tuple(output.shape))


def test_models_and_versions_not_found(stub):
    assert (
        "'nope' not found; this server has ['minilm', 'minilm.features', 'minilm-sentiment', "
        "'minilm-sentiment.features']"
    ) in refused(
        stub.ModelMetadata, v2.ModelMetadataRequest(name="nope"), grpc.StatusCode.NOT_FOUND
    )
    message = refused(
        stub.ModelReady, v2.ModelReadyRequest(name="minilm", version="9"), grpc.StatusCode.NOT_FOUND
    )
    assert "version '9' of model 'minilm' not found" in message
    # Triton's numbers name variants too: fp32-opt is 2
    assert stub.ModelReady(v2.ModelReadyRequest(name="minilm.features", version="2")).ready
    numbered = text_request("I love Paris")
    numbered.model_version = "2"
    assert stub.ModelInfer(numbered, timeout=60).model_version == "fp32-opt"
    request = text_request("x")
    request.model_version = "fp64"
    refused(stub.ModelInfer, request, grpc.StatusCode.NOT_FOUND)
    request.model_name, request.model_version = "", ""
    assert "model name: empty" in refused(stub.ModelInfer, request)
    assert stub.ModelReady(v2.ModelReadyRequest(name="minilm", version="fp32-opt")).ready


@pytest.mark.parametrize(
    "change, says",
    [
        (
            lambda r: r.inputs[0].__setattr__("datatype", "STRING"),
            "TEXT: datatype 'STRING'; allowed BYTES",
        ),
        (lambda r: r.inputs[0].__setattr__("name", "text"), "inputs[0].name='text': not an input"),
        (
            lambda r: r.inputs[0].shape.extend([2]),
            "TEXT: shape [1, 2]; allowed [batch] or [batch, 1]",
        ),
        (
            lambda r: r.inputs[0].shape.__setitem__(0, 0),
            "TEXT: shape [0]; allowed [batch] or [batch, 1], each at least 1",
        ),
        (
            lambda r: r.inputs[0].shape.__setitem__(0, 2),
            "raw content holds 1 elements, the shape says 2",
        ),
        (lambda r: r.raw_input_contents.append(b""), "raw_input_contents: 2 entries for 1 inputs"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\x09\x00\x00\x00ab"), "claims 9 bytes"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\x01\x00"), "inside an element's 4-byte"),
        (lambda r: r.raw_input_contents.__setitem__(0, packed(b"\xff\xfe")), "TEXT[0]: not UTF-8"),
        (lambda r: r.inputs[0].contents.bytes_contents.append(b"x"), "both contents and raw"),
        (
            lambda r: r.outputs.add(name="logits"),
            "outputs[1].name='logits': model 'minilm.features' has no",
        ),
        (lambda r: r.outputs.add(name="sentence_embedding"), "sentence_embedding asked for twice"),
        (
            lambda r: r.outputs.add(name="hidden_states.7"),
            "'hidden_states.7': model 'minilm.features' has no",
        ),
        (
            lambda r: r.outputs.add(name="hidden_states.-8"),
            "'hidden_states.-8': model 'minilm.features' has no",
        ),
        (
            lambda r: r.outputs[0].parameters["classification"].__setattr__("int64_param", 2),
            "per output",
        ),
        (
            lambda r: r.parameters["pooling"].__setattr__("bool_param", True),
            "a bool_param value; allowed string_param",
        ),
        (
            lambda r: r.parameters["aggregation"].__setattr__("string_param", "sum"),
            "aggregation']='sum'",
        ),
        (
            lambda r: r.parameters["layers"].__setattr__("string_param", "1,x"),
            "parameters['layers']='1,x'",
        ),
        (
            lambda r: r.parameters["datatype"].__setattr__("string_param", "FP64"),
            "one of ['FP32', 'FP16', 'BF16']",
        ),
        (
            lambda r: r.parameters["truncate"].__setattr__("string_param", "yes"),
            "a string_param value; allowed bool_param",
        ),
        (
            lambda r: r.parameters["sequence_id"].__setattr__("int64_param", 1),
            "['sequence_id']: not a parameter of this server",
        ),
    ],
)
def test_bad_text_requests_name_what_is_wrong(stub, change, says):
    request = text_request("I love Paris")
    change(request)
    assert says in refused(stub.ModelInfer, request)


@pytest.mark.parametrize(
    "request_, says",
    [
        (
            ids_request([[101, 99999, 102]]),
            "input_ids[0][1]=99999: outside the vocabulary; allowed 0..30521",
        ),
        (
            ids_request([[101, -5, 102]]),
            "input_ids[0][1]=-5: outside the vocabulary; allowed 0..30521",
        ),
        (ids_request([[101, 102]], [[1, 2]]), "attention_mask[0][1]=2: allowed 0..1"),
        (ids_request([[101, 102]], [[0, 0]]), "attention_mask[0]: all 0"),
        (ids_request([[101, 102]], [[1, 1, 1]]), "attention_mask: shape [1, 3]; allowed the shape"),
        (ids_request([[101, 102]], types=[[0, 7]]), "token_type_ids[0][1]=7: allowed 0..1"),
        (ids_request([101, 102]), "input_ids: shape [2]; allowed [batch, seq]"),
        (ids_request(np.zeros((1, 0))), "input_ids: shape [1, 0]; allowed [batch, seq], each at"),
        (ids_request([[101, 102]], datatype="INT32"), "input_ids: datatype 'INT32'; allowed INT64"),
        (ids_request([[101] + [1000] * 600 + [102]]), "longer than the model's limit of 512"),
        (v2.ModelInferRequest(model_name=FULL), "no TEXT and no input_ids"),
        (v2.ModelInferRequest(model_name="minilm"), "no TEXT among the inputs []; model 'minilm'"),
    ],
)
def test_bad_token_requests_name_what_is_wrong(stub, request_, says):
    assert says in refused(stub.ModelInfer, request_)


def test_mixed_and_conflicting_inputs(stub):
    request = ids_request([[101, 102]])
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(packed(b"x"))
    assert "TEXT and input_ids both given" in refused(stub.ModelInfer, request)
    request = text_request("a", "b")
    request.inputs.add(name="TEXT_PAIR", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(packed(b"x"))
    assert "TEXT_PAIR: 1 texts for 2 in TEXT" in refused(stub.ModelInfer, request)
    assert "normalizes sentence_embedding" in refused(
        stub.ModelInfer, text_request("a", outputs=("lengths", "hidden_states.1"), normalize=True)
    )
    assert "only lengths asked for" in refused(
        stub.ModelInfer, text_request("a", outputs=("lengths",))
    )
    assert "no field for 16-bit floats" in refused(
        stub.ModelInfer, text_request("a", datatype="FP16", binary_data_output=False)
    )
    too_long = text_request(" ".join(["word"] * 600))
    assert "longer than the model's limit" in refused(stub.ModelInfer, too_long)
    truncated = text_request(" ".join(["word"] * 600), outputs=("lengths", "sentence_embedding"))
    truncated.parameters["truncate"].bool_param = True
    response = stub.ModelInfer(truncated, timeout=60)
    assert np.frombuffer(response.raw_output_contents[0], "<i8").tolist() == [512]


def test_typed_contents_equal_raw_contents(stub, classifier_server):
    raw = stub.ModelInfer(text_request("I love Paris", "ok"), timeout=60)
    typed = v2.ModelInferRequest(
        model_name=FULL,
        model_version="fp32-opt",
        inputs=[Input(name="TEXT", datatype="BYTES", shape=[2, 1])],
        outputs=[Output(name="sentence_embedding"), Output(name="lengths")],
    )
    typed.inputs[0].contents.bytes_contents.extend([b"I love Paris", b"ok"])
    typed.parameters["binary_data_output"].bool_param = False
    answer = stub.ModelInfer(typed, timeout=60)
    assert not answer.raw_output_contents
    vectors, lengths = answer.outputs
    assert list(vectors.shape) == [2, 384] and vectors.datatype == "FP32"
    assert np.array_equal(
        np.asarray(vectors.contents.fp32_contents, np.float32).reshape(2, 384), sentence(raw)
    )
    assert list(lengths.contents.int64_contents) == [5, 3]
    ids = v2.ModelInferRequest(
        model_name=FULL,
        model_version="fp32-opt",
        inputs=[Input(name="input_ids", datatype="INT64", shape=[1, 5])],
    )
    ids.inputs[0].contents.int64_contents.extend([101, 1045, 2293, 3000, 102])
    assert np.array_equal(sentence(stub.ModelInfer(ids, timeout=60)), sentence(raw)[:1])
    # the classifier's label as typed BYTES
    label = text_request("I love Paris", outputs=("label",), binary_data_output=False)
    label.model_name = "minilm-sentiment"
    with Client(classifier_server.target) as client:
        expected = client.classify(["I love Paris"], model="minilm-sentiment", variant="fp32-opt")
    (output,) = stub.ModelInfer(label, timeout=60).outputs
    assert [x.decode() for x in output.contents.bytes_contents] == expected.labels


def test_the_typical_model_has_only_the_typical_inputs_and_outputs(stub):
    """minilm: TEXT in, sentence_embedding out, and nothing else, said the same way by
    ModelMetadata and ModelInfer; everything else is minilm.features'."""
    metadata = stub.ModelMetadata(v2.ModelMetadataRequest(name="minilm"))
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("TEXT", "BYTES", [-1, 1])
    ]
    assert [(t.name, list(t.shape)) for t in metadata.outputs] == [
        ("sentence_embedding", [-1, 384])
    ]
    classifier = stub.ModelMetadata(v2.ModelMetadataRequest(name="minilm-sentiment"))
    assert [t.name for t in classifier.outputs] == ["label", "probabilities"]
    full = stub.ModelMetadata(v2.ModelMetadataRequest(name=FULL))
    assert [t.name for t in full.inputs] == [
        "TEXT",
        "TEXT_PAIR",
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "SPANS",
    ]
    assert {"token_embeddings", "hidden_states.6", "lengths", "span_embeddings"} <= {
        t.name for t in full.outputs
    }
    assert full.versions == metadata.versions
    # the same texts give the same vector through either name
    plain = stub.ModelInfer(text_request("I love Paris", model="minilm", outputs=()), timeout=60)
    assert plain.model_name == "minilm" and [o.name for o in plain.outputs] == [
        "sentence_embedding"
    ]
    assert np.array_equal(sentence(plain), sentence(stub.ModelInfer(text_request("I love Paris"))))
    pair = text_request("a", model="minilm")
    pair.inputs.add(name="TEXT_PAIR", datatype="BYTES", shape=[1])
    pair.raw_input_contents.append(packed(b"b"))
    assert "inputs[1].name='TEXT_PAIR': not an input of model 'minilm'; allowed ['TEXT']; " in (
        refused(stub.ModelInfer, pair)
    )
    ids = ids_request([[101, 102]])
    ids.model_name = "minilm"
    assert "'minilm.features' takes" in refused(stub.ModelInfer, ids)
    assert (
        "outputs[0].name='token_embeddings': model 'minilm' has no such output; allowed "
        "['sentence_embedding']; model 'minilm.features' has every feature"
    ) in refused(stub.ModelInfer, text_request("a", model="minilm", outputs=("token_embeddings",)))


def test_repository_index_ready_keeps_the_ready_ones(stub):
    every = stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=30).models
    ready = stub.RepositoryIndex(v2.RepositoryIndexRequest(ready=True), timeout=30).models
    assert {m.state for m in ready} == {"READY"}
    assert [m for m in every if m.state == "READY"] == list(ready)
    assert ("minilm.features", "fp32-opt") in {(m.name, m.version) for m in ready}
    assert all(m.reason for m in every if m.state == "UNAVAILABLE")


def test_triton_tuning_parameters_are_ignored_others_refused(stub):
    """perf_analyzer sends triton_enable_empty_final_response with every request."""
    request = text_request("I love Paris", model="minilm", triton_enable_empty_final_response=True)
    assert sentence(stub.ModelInfer(request, timeout=60)).shape == (1, 384)
    streamed = list(stub.ModelStreamInfer(iter([request]), timeout=60))
    assert [a.error_message for a in streamed] == [""]
    other = text_request("x", model="minilm", triton_made_up=True)
    assert "parameters['triton_made_up']: not a parameter of this server" in refused(
        stub.ModelInfer, other
    )


def test_stream_errors_in_band_and_goes_on(stub):
    bad = text_request("x")
    bad.id = "bad"
    bad.model_name = "nope"
    good = text_request("I love Paris")
    good.id = "good"
    answers = list(stub.ModelStreamInfer(iter([bad, good]), timeout=60))
    by_id = {a.infer_response.id: a for a in answers}
    assert by_id["bad"].error_message.startswith("NOT_FOUND: model 'nope' not found")
    assert by_id["good"].error_message == ""
    assert np.array_equal(sentence(by_id["good"].infer_response), sentence(stub.ModelInfer(good)))


def test_bad_calls_are_counted_and_the_server_lives_on(stub, classifier_server):
    before = scrape(classifier_server.metrics_url)
    for _ in range(3):
        refused(stub.ModelInfer, text_request("x", outputs=("nope",)))
    with grpc.insecure_channel(classifier_server.target) as channel:
        garbage = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as error:
            garbage(b"\xff\xff\xff", timeout=30)
        assert error.value.code() == INVALID and "do not decode" in error.value.details()
    after = scrape(classifier_server.metrics_url)
    key = "bertserve_requests_total"
    grew = total(after, key, method="ModelInfer", code="INVALID_ARGUMENT") - total(
        before, key, method="ModelInfer", code="INVALID_ARGUMENT"
    )
    assert grew == 4
    assert stub.ServerReady(v2.ServerReadyRequest()).ready
    assert sentence(stub.ModelInfer(text_request("still here"), timeout=60)).shape == (1, 384)


def test_tls_and_tokens_apply_and_probes_stay_open(model_repo, tmp_path):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {
        "ca.pem": ca.cert_pem.bytes(),
        "server.pem": b"".join(blob.bytes() for blob in cert.cert_chain_pems),
        "server.key": cert.private_key_pem.bytes(),
        "tokens.txt": b"secret-token\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    server = start_server(
        model_repo,
        *("--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key")),
        *("--auth-token-file", str(tmp_path / "tokens.txt"), "--variant", "minilm=fp32-opt"),
        metrics=False,
        wait=False,  # servers.wait_serving speaks plaintext; the port file says it is loaded
    )
    try:
        with grpc.insecure_channel(server.target) as plaintext:
            stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(plaintext)
            refused(stub.ServerLive, v2.ServerLiveRequest(), grpc.StatusCode.UNAVAILABLE)
        tls = grpc.ssl_channel_credentials(root_certificates=files["ca.pem"])
        with grpc.secure_channel(server.target, tls) as channel:
            stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(v2.ServerLiveRequest(), timeout=30).live
            assert stub.ServerReady(v2.ServerReadyRequest(), timeout=30).ready
            refused(stub.ModelInfer, text_request("x"), grpc.StatusCode.UNAUTHENTICATED)
            refused(
                stub.ModelMetadata,
                v2.ModelMetadataRequest(name="minilm"),
                grpc.StatusCode.UNAUTHENTICATED,
            )
            answer = stub.ModelInfer(
                text_request("x"), metadata=(("authorization", "Bearer secret-token"),), timeout=60
            )
            assert answer.model_version == "fp32-opt"
    finally:
        server.stop()


async def test_overload_and_draining(model_repo):
    """max_concurrent_rpcs counts an open ModelStreamInfer; a draining server answers
    UNAVAILABLE in-band and ServerReady false."""
    config = ServerConfig(
        repo=model_repo,
        port=0,
        max_concurrent_rpcs=1,
        warmup=False,
        variants={"minilm": "fp32-opt"},
        batch=BatchSettings(max_queue_delay_ms=0),
    )
    server, port = await create_server(config.validate())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    # a version not loaded yet but loadable on first use is ready
    assert (await stub.ModelReady(v2.ModelReadyRequest(name="minilm", version="fp32"))).ready
    requests: asyncio.Queue = asyncio.Queue()

    async def feed():
        while (request := await requests.get()) is not None:
            yield request

    stream = stub.ModelStreamInfer(feed())
    first = text_request("one")
    first.id = "1"
    await requests.put(first)
    assert (await stream.read()).infer_response.id == "1"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ModelInfer(text_request("two"))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_concurrent_rpcs" in error.value.details()
    assert dict(error.value.trailing_metadata())["bertserve-reason"] == "OVERLOADED"
    assert (await stub.ServerReady(v2.ServerReadyRequest())).ready  # probes are not counted

    stopping = asyncio.create_task(server.stop(30))
    while not server.engine.draining:
        await asyncio.sleep(0.01)
    assert not server.inference.ready
    late = text_request("late")
    late.id = "late"
    await requests.put(late)
    answer = await stream.read()
    assert answer.infer_response.id == "late"
    assert answer.error_message.startswith("UNAVAILABLE: the server is shutting down")
    await requests.put(None)
    await stream.code()
    await stopping
    await channel.close()


def test_an_answer_over_the_limit_is_refused_before_work(stub):
    # 8 x 300 tokens x 7 layers x 384 floats: about 25 MiB, over the 16 MiB default
    request = text_request(*[" ".join(["word"] * 298)] * 8, outputs=("hidden_states",))
    message = refused(stub.ModelInfer, request, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "would be 24.6 MiB, over this server's limit of 16.0 MiB" in message
    assert "ask for fewer outputs" in message
