"""What each client method does, written once for Client and AsyncClient.

A method is a *plan*: a generator that builds the request (``request``), yields each call
it needs as a step (``Unary``, ``Pause``, ``Stream``) and turns the answers into a result
(``results``). It does no I/O: ``Client`` runs the steps blocking, ``AsyncClient`` awaits
them; that is the only difference between the two. A failed step is thrown back into the
plan as a ``BertserveError``, where it decides: retry, fall back to EmbedStream, or raise.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar

import grpc
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1.bertserve_pb2_grpc import BertServiceStub

from . import health as health_codec
from .bulk import RowsInOrder, sorted_batches
from .channel import TLS, Connection, auth_metadata, default_target, open_channel
from .errors import ANSWER_TOO_LARGE, BertserveError
from .request import (
    EmbedOptions,
    Inputs,
    classify_features,
    classify_request,
    embed_request,
    tokenize_request,
)
from .results import ClassifyResult, EmbedResult, Encoding, ModelInfo, join_results
from .split import needs_stream, split_request
from .stream import CALL_ATTEMPTS, backoff, remaining

T = TypeVar("T")
# How many pieces of one batch split over EmbedStream are in flight at once.
SPLIT_WINDOW = 4
HEALTH = "Health"
UNARY_METHODS = ("Embed", "Classify", "Tokenize", "ModelInfo", "ListModels")


@dataclass(frozen=True)
class Unary:
    """One attempt of a unary call: ``method`` (a BertService method or ``HEALTH``)."""

    method: str
    request: Any
    timeout: float | None

    def start(self, client: ClientBase) -> Any:
        """The answer (grpc) or an awaitable of it (grpc.aio)."""
        call = client._methods[self.method]
        return call(self.request, timeout=self.timeout, metadata=client._metadata)


@dataclass(frozen=True)
class Pause:
    """Wait ``seconds`` before the next attempt."""

    seconds: float

    def start(self, client: ClientBase) -> Any:
        return client._sleep(self.seconds)


@dataclass(frozen=True)
class Stream:
    """Send ``requests`` (the pieces of one batch) over EmbedStream; the answer is the
    list of their ``EmbedResult``, in order."""

    requests: list[pb.EmbedRequest]
    num_layers: int | None
    deadline: float | None

    def start(self, client: ClientBase) -> Any:
        return client._collect(self)


Step = Unary | Pause | Stream
Plan = Generator[Step, Any, T]


class PlanRun(Generic[T]):
    """Steps a plan: ``next()`` gives the step to run (None once done: see ``result``); what
    the step answered goes in ``reply``; a failure goes to ``fail``."""

    def __init__(self, plan: Plan[T], connection: Connection | None = None) -> None:
        self._plan = plan
        self._connection = connection
        self.reply: Any = None
        self.error: BertserveError | None = None
        self.result: T

    def next(self) -> Step | None:
        try:
            if self.error is not None:
                step = self._plan.throw(self.error)
            else:
                step = self._plan.send(self.reply)
        except StopIteration as stop:
            self.result = stop.value
            return None
        except BertserveError as error:  # the plan gave up: say what fixes it, if known
            if self._connection is not None:
                error.advise(self._connection)
            raise
        self.reply = self.error = None
        return step

    def fail(self, error: grpc.RpcError | BertserveError) -> None:
        """The step failed: ``error`` goes to the plan as one ``BertserveError``."""
        if not isinstance(error, BertserveError):
            error = BertserveError.from_rpc_error(error)
            error.__suppress_context__ = True  # the grpc error says nothing more
        self.error = error


@dataclass(frozen=True)
class StreamSource:
    """How ``embed_stream`` turns each batch into an EmbedRequest."""

    options: EmbedOptions
    info: ModelInfo | None
    model: str
    variant: str

    @property
    def num_layers(self) -> int | None:
        return self.info.num_layers if self.info else None

    def request(self, batch: Inputs, index: int) -> pb.EmbedRequest:
        return embed_request(
            batch,
            None,
            self.options,
            info=self.info,
            model=self.model,
            variant=self.variant,
            request_id=str(index),
        )


class SentenceRows:
    """``embed_many``'s texts as length-sorted batches, their vectors put back in input order."""

    def __init__(self, texts: Sequence[str], batch_size: int) -> None:
        self.texts = texts
        self.order = sorted_batches([len(text) for text in texts], batch_size)
        self.rows = RowsInOrder(len(texts))
        self.added = 0

    def batches(self) -> Iterator[list[str]]:
        return ([self.texts[i] for i in batch] for batch in self.order)

    def add(self, result: Any) -> None:
        self.rows.add(self.order[self.added], result)
        self.added += 1


class ClientBase:
    """The state and the plans of both clients (arguments: see ``Client``)."""

    _grpc: ModuleType  # grpc or grpc.aio

    def __init__(
        self,
        target: str | None = None,
        *,
        model: str | None = None,
        variant: str | None = None,
        timeout: float | None = None,
        tls: TLS = None,
        token: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target or default_target()
        self.model = model or ""
        self.variant = variant or ""
        self.timeout = timeout
        self._channel = open_channel(self._grpc, self.target, tls, options)
        self._stub = BertServiceStub(self._channel)
        self._methods = {name: getattr(self._stub, name) for name in UNARY_METHODS}
        self._methods[HEALTH] = self._channel.unary_unary(health_codec.HEALTH_CHECK)
        self._metadata = auth_metadata(token)
        self._connection = Connection.of(self.target, tls, token, timeout)
        self._infos: dict[str, ModelInfo] = {}
        self._ids = itertools.count()

    # the steps each client runs its own way
    def _sleep(self, seconds: float) -> Any:
        raise NotImplementedError

    def _collect(self, step: Stream) -> Any:
        raise NotImplementedError

    # -- plans --------------------------------------------------------------------------

    def _unary(self, method: str, request: Any, timeout: float | None = None) -> Plan[Any]:
        timeout = timeout if timeout is not None else self.timeout
        # one deadline for every attempt: a retry gets what is left, not a new timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in range(CALL_ATTEMPTS):
            try:
                return (yield Unary(method, request, remaining(deadline)))
            except BertserveError as exc:
                # The channel retries calls a replica never answered; this covers one
                # that failed after its reply had begun (all methods are idempotent).
                if exc.code != grpc.StatusCode.UNAVAILABLE or attempt + 1 == CALL_ATTEMPTS:
                    raise
            yield Pause(backoff(attempt))
        raise AssertionError("unreachable")

    def _info_plan(self, model: str | None = None) -> Plan[ModelInfo]:
        name = self.model if model is None else model
        response = yield from self._unary("ModelInfo", pb.ModelInfoRequest(model=name))
        return ModelInfo.from_pb(response.model)

    def _cached_info(self, model: str) -> Plan[ModelInfo]:
        if model not in self._infos:
            self._infos[model] = yield from self._info_plan(model)
        return self._infos[model]

    def _models_plan(self) -> Plan[list[ModelInfo]]:
        response = yield from self._unary("ListModels", pb.ListModelsRequest())
        return [ModelInfo.from_pb(m) for m in response.models]

    def _health_plan(self, service: str = "", *, timeout: float | None = None) -> Plan[str]:
        data = yield from self._unary(HEALTH, health_codec.encode_request(service), timeout)
        return health_codec.decode_response(data)

    def _embed_plan(
        self,
        inputs: Inputs,
        *,
        pairs: str | Sequence[str] | None = None,
        options: EmbedOptions | None = None,
        model: str | None = None,
        variant: str | None = None,
        timeout: float | None = None,
        **words: Any,
    ) -> Plan[EmbedResult]:
        options = EmbedOptions.of(options, words)  # type: ignore[arg-type]
        model = model or self.model
        info = (yield from self._cached_info(model)) if options.needs_info else None
        request = embed_request(
            inputs,
            pairs,
            options,
            info=info,
            model=model,
            variant=variant or self.variant,
            request_id=str(next(self._ids)),
        )
        num_layers = info.num_layers if info else None
        timeout = timeout if timeout is not None else self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        if not needs_stream(request, info):
            try:
                response = yield from self._unary("Embed", request, remaining(deadline))
                return EmbedResult.from_pb(response, num_layers)
            except BertserveError as exc:
                if exc.reason != ANSWER_TOO_LARGE:
                    raise
            # over 4 MB after all: in pieces over EmbedStream, within what is left of the timeout
        parts = yield Stream(split_request(request, info), num_layers, deadline)
        return join_results(parts, num_layers)

    def _stream_source(
        self,
        *,
        options: EmbedOptions | None = None,
        model: str | None = None,
        variant: str | None = None,
        **words: Any,
    ) -> Plan[StreamSource]:
        options = EmbedOptions.of(options, words)  # type: ignore[arg-type]
        if options.spans:
            # a span names a text of one call; a stream's batches are many calls
            raise ValueError("spans go with embed (one call); streams may use split='sentences'")
        model = model or self.model
        info = (yield from self._cached_info(model)) if options.needs_info else None
        return StreamSource(options, info, model, variant or self.variant)

    def _tokenize_plan(
        self,
        texts: str | Sequence[str],
        *,
        pairs: str | Sequence[str] | None = None,
        pad_to: int = 0,
        truncate: bool = False,
        model: str | None = None,
    ) -> Plan[list[Encoding]]:
        request = tokenize_request(
            texts, pairs, model=model or self.model, pad_to=pad_to, truncate=truncate
        )
        response = yield from self._unary("Tokenize", request)
        return [Encoding.from_pb(e) for e in response.encodings]

    def _classify_plan(
        self,
        inputs: Inputs,
        *,
        pairs: str | Sequence[str] | None = None,
        top_k: int = 0,
        logits: bool = False,
        options: EmbedOptions | None = None,
        model: str | None = None,
        variant: str | None = None,
        timeout: float | None = None,
        **words: Any,
    ) -> Plan[ClassifyResult]:
        features, truncate = classify_features(options, words)  # type: ignore[arg-type]
        model = model or self.model
        info = None
        if features and (features.needs_info or features.pools_by_default):
            info = yield from self._cached_info(model)
        request = classify_request(
            inputs,
            pairs,
            top_k=top_k,
            logits=logits,
            truncate=truncate,
            features=features,
            info=info,
            model=model,
            variant=variant or self.variant,
            request_id=str(next(self._ids)),
        )
        response = yield from self._unary("Classify", request, timeout)
        return ClassifyResult.from_pb(response, info.num_layers if info else None)
