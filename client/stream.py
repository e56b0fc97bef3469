"""EmbedStream for the blocking client: a bounded window of requests, answers in input order.

Requests sent but not answered stay in ``pending``; if the stream breaks with
UNAVAILABLE (a replica went away), a new stream sends them again, so no
request is lost and none is answered twice to the caller.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import grpc
from bertserve.v1 import bertserve_pb2 as pb

from .errors import BertserveError
from .results import EmbedResult
from .tensors import ChunkAssembler

StreamItem = EmbedResult | BertserveError
RETRY_ATTEMPTS = 5  # new streams after UNAVAILABLE without an answer in between
CALL_ATTEMPTS = 3  # unary calls failed with UNAVAILABLE, on top of the channel's retries


class StreamState:
    """What both clients share: pending requests, finished answers, the order to yield in."""

    def __init__(self, window: int, num_layers: int | None) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self.num_layers = num_layers
        self.pending: dict[str, pb.EmbedRequest] = {}  # sent (or about to be), not answered
        self.order: deque[str] = deque()  # ids in input order, not yet handed to the caller
        self.done: dict[str, StreamItem] = {}
        self.assemblers: dict[str, ChunkAssembler] = {}
        self.in_window = 0  # requests taken from the source and not yet handed back
        self.exhausted = False
        self.source_error: BaseException | None = None

    def register(self, request: pb.EmbedRequest) -> None:
        if not request.id:
            raise ValueError("every EmbedStream request needs an id")
        if request.id in self.pending or request.id in self.done:
            raise ValueError(f"request id {request.id!r} is already in flight on this stream")
        self.pending[request.id] = request
        self.order.append(request.id)
        self.in_window += 1

    def take_chunk(self, chunk: pb.EmbedResponse) -> None:
        """Account for one answer chunk; a finished answer moves to ``done``."""
        if chunk.id not in self.pending:
            return  # an answer to a request already answered (resent after a failure)
        if chunk.HasField("error") and chunk.error.code:
            self.assemblers.pop(chunk.id, None)
            self.pending.pop(chunk.id)
            self.done[chunk.id] = BertserveError.from_status(
                chunk.error.code, chunk.error.message, chunk.id
            )
            return
        assembler = self.assemblers.setdefault(chunk.id, ChunkAssembler())
        if assembler.add(chunk):
            del self.assemblers[chunk.id]
            self.pending.pop(chunk.id)
            assert assembler.first is not None
            self.done[chunk.id] = EmbedResult.from_outputs(
                assembler.first, assembler.outputs(), self.num_layers
            )

    def restart(self) -> None:
        """Forget half-received answers: their requests go out again on a new stream."""
        self.assemblers.clear()

    def pop_ready(self) -> list[StreamItem]:
        """Finished answers that are next in input order; each frees its window slot
        (``release``) only when handed to the caller, which bounds what waits here."""
        ready = []
        while self.order and self.order[0] in self.done:
            ready.append(self.done.pop(self.order.popleft()))
        return ready

    def release(self) -> None:
        self.in_window -= 1

    @property
    def finished(self) -> bool:
        return self.exhausted and not self.order


class SyncEmbedStream:
    """Iterates ``EmbedResult`` (or ``BertserveError`` with ``errors="return"``) in input order."""

    def __init__(
        self,
        open_stream: Callable[[Iterator[pb.EmbedRequest]], Iterator[pb.EmbedResponse]],
        requests: Iterator[pb.EmbedRequest],
        *,
        window: int,
        num_layers: int | None,
        errors: str = "raise",
    ) -> None:
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
        self._open = open_stream
        self._source = requests
        self._errors = errors
        self._state = StreamState(window, num_layers)
        self._cond = threading.Condition()
        self._generation = 0
        self._closed = False

    def _requests(self, generation: int) -> Iterator[pb.EmbedRequest]:
        """What one stream sends: every pending request it has not sent, then new ones."""
        state = self._state
        sent: set[str] = set()
        while True:
            with self._cond:
                while True:
                    if self._generation != generation or self._closed:
                        return
                    unsent = [r for i, r in state.pending.items() if i not in sent]
                    if unsent:
                        break
                    if state.exhausted:
                        return  # half-close: the server answers what is pending, then ends
                    if state.in_window < state.window:
                        try:
                            state.register(next(self._source))
                        except StopIteration:
                            state.exhausted = True
                        except BaseException as exc:  # the caller's iterable failed
                            state.source_error = exc
                            state.exhausted = True
                        continue
                    self._cond.wait(0.5)
                sent.intersection_update(state.pending)
                sent.update(r.id for r in unsent)
            yield from unsent

    def __iter__(self) -> Iterator[StreamItem]:
        state = self._state
        attempts = 0
        call = None
        try:
            while True:
                with self._cond:
                    state.restart()
                    generation = self._generation
                call = self._open(self._requests(generation))
                try:
                    for chunk in call:
                        attempts = 0
                        with self._cond:
                            state.take_chunk(chunk)
                            ready = state.pop_ready()
                        for item in ready:
                            yield self._deliver(item)
                except grpc.RpcError as exc:
                    code = exc.code() if hasattr(exc, "code") else None
                    with self._cond:
                        self._generation += 1
                        self._cond.notify_all()
                        retry = (
                            code == grpc.StatusCode.UNAVAILABLE
                            and attempts < RETRY_ATTEMPTS
                            and not (state.exhausted and not state.pending)
                        )
                    if not retry:
                        raise BertserveError.from_rpc_error(exc) from None
                    time.sleep(0.05 * 2**attempts)
                    attempts += 1
                    continue
                with self._cond:
                    self._generation += 1
                    self._cond.notify_all()
                    ready = state.pop_ready()
                for item in ready:
                    yield self._deliver(item)
                if state.source_error is not None:
                    raise state.source_error
                if not state.finished and attempts < RETRY_ATTEMPTS:
                    attempts += 1  # the server ended the stream early (shutting down): go on
                    continue
                if state.pending or state.order:
                    raise BertserveError(
                        grpc.StatusCode.INTERNAL,
                        f"the server ended the stream with {len(state.order)} requests unanswered",
                    )
                return
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if call is not None:
                call.cancel()

    def _deliver(self, item: StreamItem) -> StreamItem:
        with self._cond:
            self._state.release()
            self._cond.notify_all()
        if isinstance(item, BertserveError) and self._errors == "raise":
            raise item
        return item
