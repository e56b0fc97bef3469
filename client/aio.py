"""The asyncio client: the same methods as ``Client``, as coroutines."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any

import grpc
import grpc.aio
import numpy as np
from bertserve.v1 import bertserve_pb2 as pb
from bertserve.v1.bertserve_pb2_grpc import BertServiceStub

from . import health as health_codec
from .bulk import RowsInOrder, sorted_batches
from .channel import (
    TLS,
    auth_metadata,
    default_target,
    open_channel,
)
from .client import CLASSIFY_DOC, EMBED_DOC
from .errors import ANSWER_TOO_LARGE, BertserveError
from .request import (
    EmbedOptions,
    Inputs,
    classify_features,
    classify_request,
    needs_stream,
    split_request,
    tokenize_request,
)
from .results import ClassifyResult, EmbedResult, Encoding, ModelInfo, join_results
from .stream import (
    CALL_ATTEMPTS,
    RETRY_ATTEMPTS,
    StreamItem,
    StreamState,
    backoff,
    remaining,
)
from .tensors import tensor_to_numpy


class AsyncClient:
    """An asyncio client of one bertserve deployment; arguments as for ``Client``.

    >>> async with AsyncClient("127.0.0.1:50051") as client:
    ...     result = await client.embed(["I love Paris"])
    """

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
        self._channel = open_channel(grpc.aio, self.target, tls, options)
        self._stub = BertServiceStub(self._channel)
        self._health = self._channel.unary_unary(health_codec.HEALTH_CHECK)
        self._metadata = auth_metadata(token)
        self._infos: dict[str, ModelInfo] = {}
        self._ids = itertools.count()

    async def close(self) -> None:
        """Close the channel (in-flight calls are cancelled)."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        timeout = timeout if timeout is not None else self.timeout
        # one deadline for every attempt: a retry gets what is left, not a new timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in range(CALL_ATTEMPTS):
            try:
                return await method(request, timeout=remaining(deadline), metadata=self._metadata)
            except grpc.RpcError as exc:
                # The channel retries calls a replica never answered; this covers one
                # that failed after its reply had begun (all methods are idempotent).
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt + 1 == CALL_ATTEMPTS:
                    raise BertserveError.from_rpc_error(exc) from None
            await asyncio.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    async def _model_info(self, model: str) -> ModelInfo:
        if model not in self._infos:
            self._infos[model] = await self.info(model)
        return self._infos[model]

    async def embed(
        self,
        inputs: Inputs,
        *,
        pairs: Sequence[str] | None = None,
        output: str | Iterable[str] | None = None,
        pooling: str | None = None,
        layers: int | str | Iterable[int] | None = None,
        aggregate: str | None = None,
        normalize: bool = False,
        dtype: str = "float32",
        truncate: bool = False,
        model: str | None = None,
        variant: str | None = None,
        timeout: float | None = None,
    ) -> EmbedResult:
        """Features of one batch as an ``EmbedResult`` (see ``Client.embed``)."""
        options = EmbedOptions.parse(
            output=output,
            pooling=pooling,
            layers=layers,
            aggregate=aggregate,
            normalize=normalize,
            dtype=dtype,
            truncate=truncate,
            model=model or self.model,
            variant=variant or self.variant,
        )
        info = await self._model_info(options.model) if options.needs_info else None
        request = options.to_request(inputs, pairs, info, request_id=str(next(self._ids)))
        num_layers = info.num_layers if info else None
        timeout = timeout if timeout is not None else self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        if needs_stream(request, info):
            return await self._embed_streamed(split_request(request, info), num_layers, deadline)
        try:
            response = await self._call(self._stub.Embed, request, remaining(deadline))
        except BertserveError as exc:
            if exc.reason != ANSWER_TOO_LARGE:
                raise
            # over 4 MB after all: in pieces over EmbedStream, within what is left of the timeout
            pieces = split_request(request, info)
            return await self._embed_streamed(pieces, num_layers, deadline)
        outputs = {piece.name: tensor_to_numpy(piece.tensor) for piece in response.outputs}
        return EmbedResult.from_outputs(response, outputs, num_layers)

    embed.__doc__ = (embed.__doc__ or "") + EMBED_DOC

    async def _embed_streamed(
        self, requests: list[pb.EmbedRequest], num_layers: int | None, deadline: float | None
    ) -> EmbedResult:
        stream = self._stream(_aiter(requests), 4, num_layers, "raise", deadline)
        results = [r async for r in stream]  # errors="raise": every item is an EmbedResult
        return join_results(results, num_layers)  # type: ignore[arg-type]

    async def embed_stream(
        self,
        batches: Iterable[Inputs] | AsyncIterable[Inputs],
        *,
        window: int = 8,
        errors: str = "raise",
        output: str | Iterable[str] | None = None,
        pooling: str | None = None,
        layers: int | str | Iterable[int] | None = None,
        aggregate: str | None = None,
        normalize: bool = False,
        dtype: str = "float32",
        truncate: bool = False,
        model: str | None = None,
        variant: str | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Embed many batches over one EmbedStream, in order (see ``Client.embed_stream``).

        ``batches`` may be a plain or an async iterable; use ``async for``.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
        options = EmbedOptions.parse(
            output=output,
            pooling=pooling,
            layers=layers,
            aggregate=aggregate,
            normalize=normalize,
            dtype=dtype,
            truncate=truncate,
            model=model or self.model,
            variant=variant or self.variant,
        )
        info = await self._model_info(options.model) if options.needs_info else None

        async def requests() -> AsyncIterator[pb.EmbedRequest]:
            index = 0
            async for batch in _aiter(batches):
                yield options.to_request(batch, None, info, request_id=str(index))
                index += 1

        async for item in self._stream(
            requests(), window, info.num_layers if info else None, errors
        ):
            yield item

    async def _stream(
        self,
        source: AsyncIterator[pb.EmbedRequest],
        window: int,
        num_layers: int | None,
        errors: str,
        deadline: float | None = None,
    ) -> AsyncIterator[StreamItem]:
        state = StreamState(window, num_layers)
        changed = asyncio.Event()  # pending grew or a window slot was freed

        async def feed() -> None:
            # The only reader of the source: requests wait in state.pending until
            # answered, and each stream's writer sends those it has not sent.
            try:
                while True:
                    while state.in_window >= state.window:
                        changed.clear()
                        await changed.wait()
                    try:
                        request = await source.__anext__()
                    except StopAsyncIteration:
                        break
                    state.register(request)
                    changed.set()
            except Exception as exc:  # the caller's iterable failed: raised after the answers
                state.source_error = exc
            finally:
                state.exhausted = True
                changed.set()

        async def write(call: Any) -> None:
            try:
                await write_all(call)
            except (grpc.RpcError, asyncio.InvalidStateError):
                pass  # the call failed: the reader sees why and decides

        async def write_all(call: Any) -> None:
            sent: dict[str, int] = {}
            while True:
                unsent, wake = state.due(sent)
                if not unsent:
                    if state.exhausted and not state.pending:
                        await call.done_writing()
                        return
                    changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), wake)
                    continue
                for request in unsent:
                    await call.write(request)

        feeder = asyncio.ensure_future(feed())
        attempts = 0
        try:
            while True:
                state.restart()
                call = self._stub.EmbedStream(metadata=self._metadata, timeout=remaining(deadline))
                writer = asyncio.ensure_future(write(call))
                try:
                    async for chunk in call:
                        attempts = 0
                        state.take_chunk(chunk)
                        changed.set()
                        for item in state.pop_ready():
                            state.release()
                            if isinstance(item, BertserveError) and errors == "raise":
                                raise item
                            yield item
                        if state.move:
                            break  # the replica is draining: the rest go to a new call
                except grpc.RpcError as exc:
                    code = exc.code() if hasattr(exc, "code") else None
                    retry = (
                        code == grpc.StatusCode.UNAVAILABLE
                        and attempts < RETRY_ATTEMPTS
                        and not state.finished
                    )
                    if not retry:
                        raise BertserveError.from_rpc_error(exc) from None
                    await asyncio.sleep(backoff(attempts))
                    attempts += 1
                    continue
                finally:
                    writer.cancel()
                    call.cancel()
                if state.move:
                    continue
                if state.source_error is not None:
                    raise state.source_error
                if not state.finished and attempts < RETRY_ATTEMPTS:
                    attempts += 1  # the server ended the stream early: go on on a new one
                    continue
                if state.order:
                    raise BertserveError(
                        grpc.StatusCode.INTERNAL,
                        f"the server ended the stream with {len(state.order)} requests unanswered",
                    )
                return
        finally:
            feeder.cancel()

    async def embed_many(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        window: int = 8,
        pooling: str | None = None,
        normalize: bool = False,
        dtype: str = "float32",
        truncate: bool = False,
        model: str | None = None,
        variant: str | None = None,
    ) -> np.ndarray:
        """Sentence vectors of many texts, (len(texts), width) float32 in input order.

        The texts are sent over one EmbedStream as batches of ``batch_size`` texts of about
        one length (sorted by length, ``window`` batches in flight), which keeps padding
        small; other options as in ``embed``.
        """
        batches = sorted_batches([len(text) for text in texts], batch_size)
        rows = RowsInOrder(len(texts))
        results = self.embed_stream(
            ([texts[i] for i in batch] for batch in batches),
            window=window,
            output="sentence",
            pooling=pooling,
            normalize=normalize,
            dtype=dtype,
            truncate=truncate,
            model=model,
            variant=variant,
        )
        index = 0
        async for result in results:
            rows.add(batches[index], result)
            index += 1
        return rows.result()

    async def tokenize(
        self,
        texts: str | Sequence[str],
        *,
        pairs: Sequence[str] | None = None,
        pad_to: int = 0,
        truncate: bool = False,
        model: str | None = None,
    ) -> list[Encoding]:
        """The server's tokenization of each text: tokens, ids, masks, offsets."""
        request = tokenize_request(
            texts, pairs, model=model or self.model, pad_to=pad_to, truncate=truncate
        )
        response = await self._call(self._stub.Tokenize, request)
        return [Encoding.from_pb(e) for e in response.encodings]

    async def classify(
        self,
        inputs: Inputs,
        *,
        pairs: Sequence[str] | None = None,
        top_k: int = 0,
        logits: bool = False,
        output: str | Iterable[str] | None = None,
        pooling: str | None = None,
        layers: int | str | Iterable[int] | None = None,
        aggregate: str | None = None,
        normalize: bool = False,
        dtype: str = "float32",
        truncate: bool = False,
        model: str | None = None,
        variant: str | None = None,
        timeout: float | None = None,
    ) -> ClassifyResult:
        """Labels of a fine-tuned classifier for each input, as a ``ClassifyResult``:
        ``result.labels``, ``result[i].scores`` (label -> probability, best first).
        """
        features = classify_features(
            output=output,
            pooling=pooling,
            layers=layers,
            aggregate=aggregate,
            normalize=normalize,
            dtype=dtype,
        )
        model = model or self.model
        info = await self._model_info(model) if features and features.needs_info else None
        request = classify_request(
            inputs,
            pairs,
            model=model,
            variant=variant or self.variant,
            top_k=top_k,
            truncate=truncate,
            logits=logits,
            features=features,
            info=info,
            request_id=str(next(self._ids)),
        )
        response = await self._call(self._stub.Classify, request, timeout)
        return ClassifyResult.from_pb(response, info.num_layers if info else None)

    classify.__doc__ = (classify.__doc__ or "") + CLASSIFY_DOC

    async def info(self, model: str | None = None) -> ModelInfo:
        """What the server says about ``model`` (default: the client's, else the server's)."""
        name = self.model if model is None else model
        response = await self._call(self._stub.ModelInfo, pb.ModelInfoRequest(model=name))
        return ModelInfo.from_pb(response.model)

    async def models(self) -> list[ModelInfo]:
        """Every model the server serves."""
        response = await self._call(self._stub.ListModels, pb.ListModelsRequest())
        return [ModelInfo.from_pb(m) for m in response.models]

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status of ``service`` ("" = the whole server): "SERVING", ..."""
        data = await self._call(self._health, health_codec.encode_request(service), timeout)
        return health_codec.decode_response(data)


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
