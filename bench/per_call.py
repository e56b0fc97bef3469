"""Per-call cost of one short request: the raw onnxruntime session and the server, side by
side, the client in this process and the server in its own.

    python -m bertserve.bench.per_call --repo REPO [--variant fp32-opt] [--requests 500]

Prints p50/p99 of the raw session (this process, the variant's model.onnx, one thread like
the server's default) and of unary Embed (v1) and ModelInfer (v2) for a 10-token text, and the
server's own timing split (tokenization, queue, inference, the rest)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

TEXT = "the quick brown fox jumps over the lazy dog"  # 9 words: 11 tokens with [CLS] [SEP]


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1e3
    return f"p50 {np.percentile(ms, 50):.2f} ms  p99 {np.percentile(ms, 99):.2f} ms"


def raw_session(package: Path, requests: int, threads: int) -> list[float]:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(package / "model.onnx"), options, ["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(package / "tokenizer.json"))
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        encoding = tokenizer.encode(TEXT)
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in {i.name for i in session.get_inputs()}:
            feeds["token_type_ids"] = np.zeros_like(ids)
        session.run(["last_hidden_state"], feeds)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--variant", default="fp32-opt")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from bertserve.inference import grpc_service_pb2 as v2
    from bertserve.inference import grpc_service_pb2_grpc
    from bertserve.v1 import bertserve_pb2 as pb
    from bertserve.v1 import bertserve_pb2_grpc

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = Path(tempfile.mkdtemp(prefix="per-call-"))
    command = [
        sys.executable, "-m", "bertserve.client.cli", "serve", "--repo", str(args.repo),
        "--port", str(port), "--port-file", str(workdir / "port"),
        "--variant", f"{args.model}={args.variant}", "--intra-op-threads", str(args.threads),
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (workdir / "port").is_file():
            if server.poll() is not None:
                raise SystemExit("the server exited")
            time.sleep(0.1)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = bertserve_pb2_grpc.BertServiceStub(channel)
        v2_stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = pb.EmbedRequest(model=args.model, texts=[TEXT])
        infer = v2.ModelInferRequest(model_name=args.model)
        infer.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
        infer.raw_input_contents.append(len(TEXT).to_bytes(4, "little") + TEXT.encode())
        for _ in range(50):
            stub.Embed(request)
            v2_stub.ModelInfer(infer)
        figures: dict[str, object] = {"server_pid": server.pid}
        v1_times, split = [], []
        for _ in range(args.requests):
            started = time.perf_counter()
            answer = stub.Embed(request)
            v1_times.append(time.perf_counter() - started)
            t = answer.timing
            split.append((t.tokenization_ns, t.queue_ns, t.inference_ns, t.total_ns))
        v2_times = []
        for _ in range(args.requests):
            started = time.perf_counter()
            v2_stub.ModelInfer(infer)
            v2_times.append(time.perf_counter() - started)
        package = args.repo / args.model / args.variant
        raw = raw_session(package, args.requests, args.threads)
        medians = np.median(np.asarray(split, dtype=np.float64), axis=0) / 1e6
        print(f"raw session      {percentiles(raw)}")
        print(f"v1 Embed         {percentiles(v1_times)}")
        print(f"v2 ModelInfer    {percentiles(v2_times)}")
        print(
            f"server split (median ms): tokenize {medians[0]:.3f}  queue {medians[1]:.3f}  "
            f"inference {medians[2]:.3f}  total {medians[3]:.3f}"
        )
        figures.update(
            raw=raw, v1=v1_times, v2=v2_times, split_ms=medians.tolist(), load=os.getloadavg()
        )
        if args.json:
            args.json.write_text(json.dumps(figures))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
