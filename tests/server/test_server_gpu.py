"""The CUDA path (fp16 variant by default, IO binding); skipped without onnxruntime-gpu
and a GPU."""

from __future__ import annotations

import numpy as np
import pytest
from bertserve.v1 import bertserve_pb2 as pb
from server_helpers import assemble

onnxruntime = pytest.importorskip("onnxruntime")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in onnxruntime.get_available_providers(),
        reason="needs onnxruntime-gpu and a CUDA device",
    ),
]


async def test_cuda_server_agrees_with_the_cpu_server(model_repo, in_process):
    from server_helpers import start_in_process

    gpu = await start_in_process(model_repo, device="cuda")
    try:
        info = (await gpu.stub.ModelInfo(pb.ModelInfoRequest())).model
        default = next(v for v in info.variants if v.name == info.default_variant)
        assert default.execution_provider == "CUDAExecutionProvider"
        request = pb.EmbedRequest(
            texts=["I love Paris", "hello"], pooling=pb.POOLING_MEAN, layers=[-2]
        )
        on_gpu = assemble([await gpu.stub.Embed(request)])
        on_cpu = assemble([await in_process.stub.Embed(request)])
        for name in on_cpu:
            np.testing.assert_allclose(
                on_gpu[name], on_cpu[name], atol=2e-2 if "fp16" in info.default_variant else 1e-3
            )
    finally:
        await gpu.channel.close()
        await gpu.server.stop(0)
