"""The asyncio client: the same methods as ``Client``, as coroutines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any, TypeVar, Unpack

import grpc
import grpc.aio
import numpy as np
from bertserve.v1 import bertserve_pb2 as pb

from .calls import SPLIT_WINDOW, ClientBase, Plan, PlanRun, SentenceRows, Stream
from .client import CLASSIFY_DOC, EMBED_DOC
from .errors import BertserveError
from .request import ClassifyArgs, EmbedArgs, Inputs, StreamArgs, TokenizeArgs
from .results import ClassifyResult, EmbedResult, Encoding, ModelInfo
from .stream import RETRY_ATTEMPTS, StreamItem, StreamState, backoff, remaining

T = TypeVar("T")


class AsyncClient(ClientBase):
    """An asyncio client of one bertserve deployment; arguments as for ``Client``.

    >>> async with AsyncClient("127.0.0.1:50051") as client:
    ...     result = await client.embed(["I love Paris"])
    """

    _grpc = grpc.aio

    async def close(self) -> None:
        """Close the channel (in-flight calls are cancelled)."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, plan: Plan[T]) -> T:
        run = PlanRun(plan, self._connection)
        while (step := run.next()) is not None:
            try:
                run.reply = await step.start(self)
            except (grpc.RpcError, BertserveError) as exc:
                run.fail(exc)
        return run.result

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _collect(self, step: Stream) -> list[EmbedResult]:
        stream = self._stream(
            _aiter(step.requests), SPLIT_WINDOW, step.num_layers, "raise", step.deadline
        )
        return [r async for r in stream]  # type: ignore[misc]  # errors="raise": only results

    async def embed(self, inputs: Inputs, **call: Unpack[EmbedArgs]) -> EmbedResult:
        """Features of one batch as an ``EmbedResult`` (see ``Client.embed``)."""
        return await self._run(self._embed_plan(inputs, **call))

    embed.__doc__ = (embed.__doc__ or "") + EMBED_DOC

    async def embed_stream(
        self,
        batches: Iterable[Inputs] | AsyncIterable[Inputs],
        *,
        window: int = 8,
        errors: str = "raise",
        **call: Unpack[StreamArgs],
    ) -> AsyncIterator[StreamItem]:
        """Embed many batches over one EmbedStream, in order (see ``Client.embed_stream``).

        ``batches`` may be a plain or an async iterable; use ``async for``.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
        source = await self._run(self._stream_source(**call))

        async def requests() -> AsyncIterator[pb.EmbedRequest]:
            index = 0
            async for batch in _aiter(batches):
                yield source.request(batch, index)
                index += 1

        try:
            async for item in self._stream(requests(), window, source.num_layers, errors):
                yield item
        except BertserveError as exc:
            raise exc.advise(self._connection) from None

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
        **call: Unpack[StreamArgs],
    ) -> np.ndarray:
        """Sentence vectors of many texts in input order (see ``Client.embed_many``)."""
        many = SentenceRows(texts, batch_size)
        async for result in self.embed_stream(many.batches(), window=window, **call):
            many.add(result)
        return many.rows.result()

    async def tokenize(
        self, texts: str | Sequence[str], **call: Unpack[TokenizeArgs]
    ) -> list[Encoding]:
        """The server's tokenization of each text (see ``Client.tokenize``)."""
        return await self._run(self._tokenize_plan(texts, **call))

    async def classify(self, inputs: Inputs, **call: Unpack[ClassifyArgs]) -> ClassifyResult:
        """Labels of a fine-tuned classifier for each input (see ``Client.classify``)."""
        return await self._run(self._classify_plan(inputs, **call))

    classify.__doc__ = (classify.__doc__ or "") + CLASSIFY_DOC

    async def info(self, model: str | None = None) -> ModelInfo:
        """What the server says about ``model`` (default: the client's, else the server's)."""
        return await self._run(self._info_plan(model))

    async def models(self) -> list[ModelInfo]:
        """Every model the server serves."""
        return await self._run(self._models_plan())

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status of ``service`` ("" = the whole server): "SERVING", ..."""
        return await self._run(self._health_plan(service, timeout=timeout))


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
