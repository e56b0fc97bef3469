"""The smoke test of ``./dev test --fast``: one real server on the bundled model, answering
both front doors and health the way the quickstart shows."""

from __future__ import annotations

import grpc
import numpy as np
from bertserve.client import Client
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def raw_mean_pooled(repo, text: str) -> np.ndarray:
    """The same vector from a raw onnxruntime session on the same package files."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    folder = repo / "minilm" / "fp32-opt"
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    ids = np.asarray([tokenizer.encode(text).ids], dtype=np.int64)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
    (hidden,) = session.run(["last_hidden_state"], feeds)
    return hidden[0].mean(axis=0)


def test_one_server_answers_both_protocols_and_health(live_server):
    with grpc.insecure_channel(live_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        with Client(live_server.target) as client:
            encoding = client.tokenize(["I love Paris"])[0]
            assert list(encoding.input_ids) == [101, 1045, 2293, 3000, 102]
            vector = client.embed(["I love Paris"], pooling="mean").sentence_embedding[0]
        expected = raw_mean_pooled(live_server.repo, "I love Paris")
        assert vector.shape == (384,)
        np.testing.assert_allclose(vector, expected, atol=1e-5)

        text = v2.ModelInferRequest.InferInputTensor(name="TEXT", datatype="BYTES", shape=[1])
        text.contents.bytes_contents.append(b"I love Paris")
        request = v2.ModelInferRequest(
            model_name="minilm",
            inputs=[text],
            outputs=[v2.ModelInferRequest.InferRequestedOutputTensor(name="sentence_embedding")],
        )
        request.parameters["pooling"].string_param = "mean"
        answer = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
        (output,) = answer.outputs
        assert (output.name, list(output.shape)) == ("sentence_embedding", [1, 384])
        served = np.frombuffer(answer.raw_output_contents[0], dtype="<f4")
        np.testing.assert_array_equal(served, vector)
