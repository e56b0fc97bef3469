"""Runs in a virtual environment that has tritonclient[grpc] (and protobuf < 7), not bertserve:
drives a bertserve server through Triton's own client, unchanged, as a Triton user would, and
writes what it got to OUT (results.json, and one .npy per array).

    python tritonclient_run.py TARGET OUT
"""

from __future__ import annotations

import json
import queue
import sys
from functools import partial
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

TEXTS = ["I love Paris", "Paris is lovely in the spring, they say", "ok"]
PAIRS = ["Do you?", "Who says so", "fine"]
# minilm: TEXT -> sentence_embedding; minilm.features: every input and output
TYPICAL, EMBEDDER, CLASSIFIER = "minilm", "minilm.features", "minilm-sentiment"
STATISTICS_REQUESTS = 5
VERSION = "fp32-opt"


def text_input(
    name: str, texts: list[str], shape: list[int] | None = None
) -> grpcclient.InferInput:
    array = np.array([t.encode() for t in texts], dtype=np.object_)
    if shape:
        array = array.reshape(shape)
    tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def int64_input(name: str, array: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
    tensor.set_data_from_numpy(array.astype(np.int64))
    return tensor


def outputs(*names: str) -> list[grpcclient.InferRequestedOutput]:
    return [grpcclient.InferRequestedOutput(name) for name in names]


def error_of(call) -> dict:
    try:
        call()
    except InferenceServerException as error:
        return {"status": error.status(), "message": error.message()}
    return {"status": "OK", "message": ""}


def main(target: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    arrays: dict[str, np.ndarray] = {}
    client = grpcclient.InferenceServerClient(url=target)

    def infer(key: str, model: str, inputs, names, **parameters):
        result = client.infer(
            model,
            inputs,
            model_version=VERSION,
            outputs=outputs(*names) if names else None,
            request_id=key,
            parameters=parameters or None,
        )
        response = result.get_response()
        results[key] = {
            "id": response.id,
            "model_name": response.model_name,
            "model_version": response.model_version,
            "outputs": {o.name: [o.datatype, list(o.shape)] for o in response.outputs},
        }
        for output in response.outputs:
            array = result.as_numpy(output.name)
            if output.datatype == "BYTES":
                results[key][output.name] = [x.decode() for x in array.ravel()]
            else:
                arrays[f"{key}.{output.name}"] = array.astype(
                    np.float32 if output.datatype in ("FP16", "BF16") else array.dtype
                )

    # health and metadata
    results["live"] = client.is_server_live()
    results["ready"] = client.is_server_ready()
    results["server"] = client.get_server_metadata(as_json=True)
    results["metadata"] = {
        m: client.get_model_metadata(m, as_json=True) for m in (TYPICAL, EMBEDDER, CLASSIFIER)
    }
    results["config"] = {
        m: client.get_model_config(m, VERSION, as_json=True)["config"]
        for m in (TYPICAL, EMBEDDER, CLASSIFIER)
    }
    results["index"] = client.get_model_repository_index(as_json=True)["models"]

    # statistics: what a known number of requests (and one refused) adds
    def statistics() -> dict:
        (stats,) = client.get_inference_statistics(TYPICAL, VERSION, as_json=True)["model_stats"]
        return stats

    results["statistics_before"] = statistics()
    for index in range(STATISTICS_REQUESTS):
        client.infer(
            TYPICAL, [text_input("TEXT", TEXTS)], model_version=VERSION, request_id=str(index)
        )
    results["statistics_refused"] = error_of(
        lambda: client.infer(
            TYPICAL, [text_input("TEXT", ["x"])], model_version=VERSION, outputs=outputs("nope")
        )
    )
    results["statistics_after"] = statistics()
    results["statistics_all"] = [
        (s["name"], s["version"])
        for s in client.get_inference_statistics(as_json=True)["model_stats"]
    ]
    results["model_ready"] = {
        "default": client.is_model_ready(EMBEDDER),
        VERSION: client.is_model_ready(EMBEDDER, VERSION),
    }

    # text in: the default output, then every output kind with parameters
    infer("text", TYPICAL, [text_input("TEXT", TEXTS)], [])
    infer(
        "text_column",
        TYPICAL,
        [text_input("TEXT", TEXTS, [len(TEXTS), 1])],
        ["sentence_embedding"],
    )
    infer(
        "pairs",
        EMBEDDER,
        [text_input("TEXT", TEXTS), text_input("TEXT_PAIR", PAIRS)],
        ["sentence_embedding", "lengths"],
        pooling="cls",
    )
    infer(
        "every",
        EMBEDDER,
        [text_input("TEXT", TEXTS)],
        [
            "sentence_embedding",
            "token_embeddings",
            "hidden_states.0",
            "hidden_states.-2",
            "hidden_states",
            "lengths",
        ],
        pooling="max",
        layers="-1,2",
        normalize=True,
    )
    infer(
        "concat",
        EMBEDDER,
        [text_input("TEXT", TEXTS)],
        ["sentence_embedding"],
        aggregation="concat_last_4",
    )
    infer("layer_int", EMBEDDER, [text_input("TEXT", TEXTS)], ["hidden_states"], layers=3)
    for datatype in ("FP16", "BF16"):
        infer(
            datatype,
            EMBEDDER,
            [text_input("TEXT", TEXTS)],
            ["sentence_embedding", "token_embeddings"],
            datatype=datatype,
        )

    # token ids in: padded to one length, the padding marked 0 in attention_mask
    ids = np.array(
        [[101, 1045, 2293, 3000, 102, 0, 0], [101, 3000, 102, 1045, 2293, 3000, 102]],
        dtype=np.int64,
    )
    mask = np.array([[1, 1, 1, 1, 1, 0, 0], [1] * 7])
    types = np.array([[0] * 7, [0, 0, 0, 1, 1, 1, 1]])
    infer(
        "ids",
        EMBEDDER,
        [
            int64_input("input_ids", ids),
            int64_input("attention_mask", mask),
            int64_input("token_type_ids", types),
        ],
        ["sentence_embedding", "token_embeddings", "lengths"],
    )
    infer("ids_only", EMBEDDER, [int64_input("input_ids", ids[1:])], ["sentence_embedding"])

    # a classifier's labels
    infer(  # logits: only the .features name has them
        "classify",
        CLASSIFIER + ".features",
        [text_input("TEXT", TEXTS)],
        ["label", "probabilities", "logits"],
    )
    infer("classify_default", CLASSIFIER, [text_input("TEXT", TEXTS)], [])

    # streaming (Triton's extension): answers by id, a bad request's error in-band
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), answers))
    for index, text in enumerate(TEXTS):
        client.async_stream_infer(
            EMBEDDER,
            [text_input("TEXT", [text])],
            model_version=VERSION,
            outputs=outputs("sentence_embedding"),
            request_id=f"stream-{index}",
        )
    client.async_stream_infer(
        EMBEDDER, [text_input("TEXT", ["x"])], outputs=outputs("nope"), request_id="bad"
    )
    client.async_stream_infer(
        EMBEDDER,
        [text_input("TEXT", ["after"])],
        model_version=VERSION,
        outputs=outputs("lengths", "sentence_embedding"),
        request_id="after",
    )
    stream: dict = {"errors": []}
    for _ in range(len(TEXTS) + 2):
        result, error = answers.get(timeout=120)
        if error is not None:
            stream["errors"].append(str(error))
            continue
        response = result.get_response()
        stream[response.id] = response.model_version
        arrays[f"stream.{response.id}"] = result.as_numpy("sentence_embedding")
    client.stop_stream()
    results["stream"] = stream

    # bad input: the status code and message tritonclient shows
    one = [text_input("TEXT", ["x"])]
    bad_type = grpcclient.InferInput("TEXT", [1], "INT64")
    bad_type.set_data_from_numpy(np.array([1], dtype=np.int64))
    results["errors"] = {
        "unknown_model": error_of(lambda: client.infer("nope", one)),
        "unknown_version": error_of(lambda: client.infer(EMBEDDER, one, model_version="9")),
        "wrong_datatype": error_of(lambda: client.infer(EMBEDDER, [bad_type])),
        "unknown_output": error_of(lambda: client.infer(EMBEDDER, one, outputs=outputs("logits"))),
        "unknown_parameter": error_of(
            lambda: client.infer(EMBEDDER, one, parameters={"poolin": "cls"})
        ),
        "bad_pooling": error_of(lambda: client.infer(EMBEDDER, one, parameters={"pooling": "avg"})),
        "unknown_model_ready": error_of(lambda: client.is_model_ready("nope")),
    }
    results["still_live"] = client.is_server_live() and client.is_server_ready()
    client.close()

    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    for key, array in arrays.items():
        np.save(out / f"{key}.npy", array, allow_pickle=False)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
