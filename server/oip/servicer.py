"""The Open Inference Protocol (KServe v2, Triton's gRPC API): ``inference.GRPCInferenceService``
beside bertserve.v1, on the same core: models, batchers, limits and error table.

Each model of the repository is a v2 model; its versions are its variants (``fp32``,
``fp32-opt``, ``int8``, ...): the spec's version is how a caller picks one artifact of a model,
ModelReady and ModelMetadata take it, and ModelInferResponse names the one that answered.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import AsyncIterator
from typing import Any

import grpc
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from bertserve.server.core.engine import Admit, Engine, answer_limit, check_answer_size
from bertserve.server.core.request import MAX_NAME_BYTES
from bertserve.server.core.stream import StreamBuffer, run_stream
from bertserve.server.core.validate import check_identifier
from bertserve.server.errors import FailedPrecondition, InvalidArgument, ModelNotFound, status_of
from bertserve.server.oip import answer, codec
from bertserve.server.oip.codec import field_name
from bertserve.server.repository import ModelPackage
from bertserve.server.rpc import code_of, record, refuse_if_draining, unary

SERVICE_NAME = codec.SERVICE_NAME
# Room in a message for everything but the tensors.
MESSAGE_MARGIN = 64 * 1024
# Inputs or answers above these sizes are read or built off the event loop.
INLINE_INPUT_BYTES = 256 * 1024
INLINE_ANSWER_BYTES = 256 * 1024


class InferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """The v2 front door onto the core: its registry, batchers, drain state and streams."""

    field_name = staticmethod(field_name)

    def __init__(self, engine: Engine, config: Any) -> None:
        self.engine = engine
        self.registry = engine.registry
        self.config = config
        # one message out must fit the server's send limit (the caller's may be higher)
        limit = min(config.max_answer_bytes, config.max_request_bytes)
        self.answer_limit = (
            limit,
            f"this server's limit of {limit / 2**20:.1f} MiB per message (max_answer_bytes, "
            "max_request_bytes)",
            "ask for fewer outputs or send fewer texts per request",
        )
        self._admit = answer_limit(limit - MESSAGE_MARGIN, *self.answer_limit[1:])

    @property
    def ready(self) -> bool:
        return self.engine.ready and not self.engine.draining

    # -- models and versions ---------------------------------------------------------------

    def _model(self, name: str) -> ModelPackage:
        if not name:
            raise InvalidArgument(
                f"model name: empty; allowed one of {sorted(self.registry.models)}"
            )
        check_identifier(name, "model", MAX_NAME_BYTES)
        return self.registry.model(name)

    def _version(self, model: ModelPackage, version: str) -> str:
        """The variant a version names ("" = the model's default); NOT_FOUND if not served."""
        if not version:
            return self.registry.default_variants[model.name]
        check_identifier(version, "variant", MAX_NAME_BYTES)
        versions = self.registry.servable_variants(model)
        if version not in versions:
            raise ModelNotFound(
                f"version {version!r} of model {model.name!r} not found; its versions (the "
                f"variants this server serves) are {versions}"
            )
        return version

    def _outputs(self, model: ModelPackage) -> dict[str, tuple[str, list[int]]]:
        manifest = model.manifest
        return codec.output_metadata(
            int(manifest["num_layers"]),
            int(manifest["hidden_size"]),
            self.registry.labels(model.name),
        )

    # -- inference -------------------------------------------------------------------------

    async def infer(
        self, request: v2.ModelInferRequest, timeout: float | None, admit: Admit
    ) -> v2.ModelInferResponse:
        """Answer one ModelInferRequest through the core."""
        self.engine.check_open()
        check_identifier(request.id, "id", 256)
        model = self._model(request.model_name)
        version = self._version(model, request.model_version)
        variant = await self.engine.variant(model.name, version)
        parameters = codec.read_parameters(request.parameters)
        top = variant.num_layers
        names = codec.requested_outputs(request, self._outputs(model), model.name, top)
        args = (
            request,
            parameters,
            list(names.values()),
            version,
            self.config.max_request_sequences,
        )
        if codec.input_size(request) <= INLINE_INPUT_BYTES:
            core_request = codec.core_request(*args)
        else:  # walking millions of elements would stall every other caller
            core_request = await asyncio.to_thread(codec.core_request, *args)
        result, _, variant = await self.engine.embed(
            core_request, timeout, admit, padded=True, variant=variant
        )
        build = (
            request.id,
            variant.model.name,
            variant.package.name,
            top,
            self.registry.labels(variant.model.name),
            names,
            result,
            parameters,
        )
        if sum(array.nbytes for array in result.outputs.values()) <= INLINE_ANSWER_BYTES:
            response = answer.response(*build)
        else:
            response = await asyncio.to_thread(answer.response, *build)
        check_answer_size(response.ByteSize(), *self.answer_limit, estimated=False)
        return response

    # -- the RPCs --------------------------------------------------------------------------

    # The two probes are not @unary: a draining server is still live, and not ready, rather
    # than UNAVAILABLE (as grpc.health.v1 answers NOT_SERVING).
    async def ServerLive(
        self, request: v2.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: v2.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self.ready)

    @unary("ModelReady")
    async def ModelReady(
        self, request: v2.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelReadyResponse:
        try:
            model = self._model(request.name)
        except FailedPrecondition:  # a model whose every package was refused at load
            return v2.ModelReadyResponse(ready=False)
        key = (model.name, self._version(model, request.version))
        loadable = key not in self.registry.failed and (
            len(self.registry.loaded) < self.config.max_loaded_variants
        )
        return v2.ModelReadyResponse(ready=self.ready and (key in self.registry.loaded or loadable))

    @unary("ServerMetadata")
    async def ServerMetadata(
        self, request: v2.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(
            name="bertserve", version=_version(), extensions=list(codec.EXTENSIONS)
        )

    @unary("ModelMetadata")
    async def ModelMetadata(
        self, request: v2.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelMetadataResponse:
        model = self._model(request.name)
        self._version(model, request.version)
        tensor = v2.ModelMetadataResponse.TensorMetadata
        return v2.ModelMetadataResponse(
            name=model.name,
            versions=self.registry.servable_variants(model),
            platform=codec.PLATFORM,
            inputs=[
                tensor(name=name, datatype=datatype, shape=shape)
                for name, (datatype, shape) in codec.input_metadata().items()
            ],
            outputs=[
                tensor(name=name, datatype=datatype, shape=shape)
                for name, (datatype, shape) in self._outputs(model).items()
            ],
        )

    @unary("ModelInfer")
    async def ModelInfer(
        self, request: v2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelInferResponse:
        return await self.infer(request, context.time_remaining(), self._admit)

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[v2.ModelInferRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[v2.ModelStreamInferResponse]:
        """Triton's streaming extension: each request answered as it completes; a failed one
        answers ``error_message`` ("CODE: message") in-band and the stream goes on."""
        await refuse_if_draining(self.engine, context)

        async def work(
            request: v2.ModelInferRequest, admit: Admit
        ) -> list[v2.ModelStreamInferResponse]:
            response = await self.infer(request, context.time_remaining(), admit)
            return [v2.ModelStreamInferResponse(infer_response=response)]

        def failed(
            request: v2.ModelInferRequest, error: Exception
        ) -> list[v2.ModelStreamInferResponse]:
            code, message = status_of(error, field_name)
            echo = v2.ModelInferResponse(
                model_name=request.model_name[:MAX_NAME_BYTES],
                model_version=request.model_version[:MAX_NAME_BYTES],
                id=request.id[:256],
            )
            return [
                v2.ModelStreamInferResponse(
                    error_message=f"{code.name}: {message}", infer_response=echo
                )
            ]

        def done(
            request: v2.ModelInferRequest, error: BaseException | None, seconds: float
        ) -> None:
            code = code_of(error, "ModelStreamInfer", request.id[:64])
            record("ModelStreamInfer.item", code, seconds, request.id[:64])

        buffer = StreamBuffer(self.config.stream_buffer_bytes, self.config.max_answer_bytes)
        stream = run_stream(self.engine, request_iterator, buffer, work, failed, done)
        async for response in stream:
            yield response


def _version() -> str:
    try:
        return importlib.metadata.version("bertserve")
    except importlib.metadata.PackageNotFoundError:
        return "0"
