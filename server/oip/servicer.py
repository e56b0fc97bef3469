"""The Open Inference Protocol (KServe v2, Triton's gRPC API): ``inference.GRPCInferenceService``
beside bertserve.v1, on the same core: models, batchers, limits and error table.

Each model of the repository is two v2 models (server/triton.py): ``MODEL``, with the inputs and
outputs of a typical request (``TEXT`` in; ``sentence_embedding``, or a classifier's ``label``
and ``probabilities``, out), and ``MODEL.features`` with all of them. Their versions are the
variants (``fp32``, ``fp32-opt``, ``int8``, ... or Triton's numbers for them): the spec's
version is how a caller picks one artifact of a model, ModelReady, ModelMetadata and
ModelConfig take it, and ModelInferResponse names the one that answered. Triton's model APIs
(ModelConfig, ModelStatistics, RepositoryIndex) answer from server/triton.py.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from bertserve.inference import grpc_service_pb2 as v2
from bertserve.inference import grpc_service_pb2_grpc
from bertserve.server import triton
from bertserve.server.core.engine import Admit, Engine, answer_limit, check_answer_size
from bertserve.server.core.request import MAX_ID_BYTES, MAX_NAME_BYTES, Result
from bertserve.server.core.stream import StreamBuffer, run_stream
from bertserve.server.core.validate import check_identifier
from bertserve.server.errors import FailedPrecondition, InvalidArgument, ModelNotFound, status_of
from bertserve.server.oip import answer, codec, inputs
from bertserve.server.oip.codec import field_name
from bertserve.server.rpc import code_of, record, refuse_if_draining, unary
from bertserve.server.statistics import STATISTICS

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

    def _model(self, name: str) -> triton.V2Model:
        models = self.registry.models
        if not name:
            raise InvalidArgument(f"model name: empty; allowed one of {triton.names(models)}")
        check_identifier(name, "model", MAX_NAME_BYTES)
        model = triton.resolve(models, name)
        if model is None:
            base = name.removesuffix(triton.FEATURES)
            refused = [why for (m, _), why in self.registry.failed.items() if m == base]
            if refused:
                raise FailedPrecondition(refused[0])
            raise ModelNotFound(f"model {name!r} not found; this server has {triton.names(models)}")
        return model

    def _version(self, model: triton.V2Model, version: str) -> str:
        """The variant a version names ("" = the model's default; a name or its Triton number);
        NOT_FOUND if not served."""
        if not version:
            return self.registry.default_variants[model.model]
        check_identifier(version, "variant", MAX_NAME_BYTES)
        version = triton.variant_of(model.package, version)
        versions = self.registry.servable_variants(model.package)
        if version not in versions:
            raise ModelNotFound(
                f"version {version!r} of model {model.name!r} not found; its versions (the "
                f"variants this server serves) are {versions}"
            )
        return version

    # -- inference -------------------------------------------------------------------------

    async def infer(
        self, request: v2.ModelInferRequest, timeout: float | None, admit: Admit
    ) -> v2.ModelInferResponse:
        """Answer one ModelInferRequest through the core; its counts and times go to the
        statistics of ModelStatistics."""
        started = time.monotonic_ns()
        self.engine.check_open()
        check_identifier(request.id, "id", MAX_ID_BYTES)
        model = self._model(request.model_name)
        version = self._version(model, request.model_version)
        try:
            response, result, read_ns, answering = await self._infer(
                request, model, version, timeout, admit
            )
        except Exception:
            STATISTICS.failed(model.name, version, time.monotonic_ns() - started)
            raise
        done = time.monotonic_ns()
        timing = result.timing
        STATISTICS.succeeded(
            model.name,
            version,
            sequences=len(result.lengths),
            total_ns=done - started,
            queue_ns=timing.queue_ns,
            input_ns=read_ns + timing.tokenization_ns,  # reading the inputs, then tokenizing
            infer_ns=timing.inference_ns,
            output_ns=done - answering,
        )
        return response

    async def _infer(
        self,
        request: v2.ModelInferRequest,
        model: triton.V2Model,
        version: str,
        timeout: float | None,
        admit: Admit,
    ) -> tuple[v2.ModelInferResponse, Result, int, int]:
        """The answer, the core's result, how long reading the inputs took and when building
        the answer began (ns)."""
        variant = await self.engine.variant(model.model, version)
        parameters = codec.read_parameters(request.parameters)
        top = variant.num_layers
        names = codec.requested_outputs(request, model, top)
        args = (
            request,
            parameters,
            list(names.values()),
            version,
            self.config.max_request_sequences,
            model,
        )
        reading = time.monotonic_ns()
        if inputs.input_size(request) <= INLINE_INPUT_BYTES:
            core_request = codec.core_request(*args)
        else:  # walking millions of elements would stall every other caller
            core_request = await asyncio.to_thread(codec.core_request, *args)
        read_ns = time.monotonic_ns() - reading
        result, _, variant = await self.engine.embed(
            core_request, timeout, admit, padded=True, variant=variant
        )
        answering = time.monotonic_ns()
        build = (
            request.id,
            model.name,
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
        return response, result, read_ns, answering

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
        key = (model.model, self._version(model, request.version))
        loadable = key not in self.registry.failed and (
            len(self.registry.loaded) < self.config.max_loaded_variants
        )
        return v2.ModelReadyResponse(ready=self.ready and (key in self.registry.loaded or loadable))

    @unary("ServerMetadata")
    async def ServerMetadata(
        self, request: v2.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(
            name="bertserve", version=_version(), extensions=list(triton.EXTENSIONS)
        )

    @unary("ModelMetadata")
    async def ModelMetadata(
        self, request: v2.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelMetadataResponse:
        model = self._model(request.name)
        self._version(model, request.version)
        return triton.metadata(model, self.registry.servable_variants(model.package))

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
                id=request.id[:MAX_ID_BYTES],
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

    # -- Triton's model APIs (server/triton.py builds the answers) ---------------------------

    @unary("ModelConfig")
    async def ModelConfig(
        self, request: v2.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelConfigResponse:
        model = self._model(request.name)
        version = self._version(model, request.version)
        settings = self.config.batch_settings(model.model)
        return v2.ModelConfigResponse(
            config=triton.model_config(model, version, settings, self.config)
        )

    @unary("ModelStatistics")
    async def ModelStatistics(
        self, request: v2.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelStatisticsResponse:
        """Every model and version, or the one asked for (``version`` needs ``name``)."""
        if request.version and not request.name:
            raise InvalidArgument("version without name; allowed: a name, or neither")
        if request.name:
            model = self._model(request.name)
            versions = (
                [self._version(model, request.version)]
                if request.version
                else self.registry.servable_variants(model.package)
            )
            wanted = [(model, versions)]
        else:
            wanted = []
            for name in triton.names(self.registry.models):
                model = self._model(name)
                wanted.append((model, self.registry.servable_variants(model.package)))
        stats = []
        for model, variants in wanted:
            numbers = triton.version_numbers(list(model.package.variants))
            for variant in variants:
                label = f"{model.model}/{variant}"
                stats.append(
                    triton.model_statistics(
                        model.name, variant, numbers[variant], label, STATISTICS
                    )
                )
        return v2.ModelStatisticsResponse(model_stats=stats)

    @unary("RepositoryIndex")
    async def RepositoryIndex(
        self, request: v2.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> v2.RepositoryIndexResponse:
        """Every v2 model and version with its state; ``ready`` keeps the READY ones."""
        registry = self.registry
        return triton.repository_index(
            registry.models,
            {name: registry.servable_variants(model) for name, model in registry.models.items()},
            registry.failed,
            set(registry.loaded),
            self.config.max_loaded_variants,
            ready_only=request.ready,
        )


def _version() -> str:
    try:
        return importlib.metadata.version("bertserve")
    except importlib.metadata.PackageNotFoundError:
        return "0"
