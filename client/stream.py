"""EmbedStream for the blocking client: a bounded window of requests, answers in input order.

Requests sent but not answered stay in ``pending``; if the stream breaks with
UNAVAILABLE (a replica went away), a new stream sends them again, so no
request is lost and none is answered twice to the caller. An in-band
UNAVAILABLE (the replica is draining) moves the stream to a new call the same
way; an in-band RESOURCE_EXHAUSTED from overload sends that request again after
a backoff. A request too big to send fails alone, in-band, and the stream goes on.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import grpc
from bertserve.v1 import bertserve_pb2 as pb

from .channel import MAX_MESSAGE_BYTES
from .errors import REQUEST_TOO_LARGE, BertserveError
from .results import EmbedResult
from .tensors import ChunkAssembler

StreamItem = EmbedResult | BertserveError
RETRY_ATTEMPTS = 5  # new streams after UNAVAILABLE without an answer in between
CALL_ATTEMPTS = 3  # unary calls failed with UNAVAILABLE, on top of the channel's retries
ITEM_ATTEMPTS = 6  # sends of one stream request answered in-band UNAVAILABLE/RESOURCE_EXHAUSTED


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0, 1, ...): 50 ms doubling, at most 2 s."""
    return min(2.0, 0.05 * 2**attempt)


def remaining(deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (time.monotonic()); DEADLINE_EXCEEDED once passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise BertserveError(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's timeout passed")
    return left


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
        self.sends: dict[str, int] = {}  # id -> times it was (or is to be) sent
        self.not_before: dict[str, float] = {}  # id -> monotonic time it may be sent again
        self.move = False  # an in-band UNAVAILABLE: go on on a new call (another replica)

    def register(self, request: pb.EmbedRequest) -> None:
        if not request.id:
            raise ValueError("every EmbedStream request needs an id")
        if request.id in self.pending or request.id in self.done:
            raise ValueError(f"request id {request.id!r} is already in flight on this stream")
        self.order.append(request.id)
        self.in_window += 1
        size = request.ByteSize()
        if size > MAX_MESSAGE_BYTES:  # sending it would end the whole stream
            self.done[request.id] = BertserveError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the request is {size / 2**20:.1f} MiB, over the {MAX_MESSAGE_BYTES >> 20} MiB "
                "message limit; send fewer or shorter texts per batch",
                request.id,
                REQUEST_TOO_LARGE,
            )
            return
        self.pending[request.id] = request
        self.sends[request.id] = 1

    def due(self, sent: dict[str, int]) -> tuple[list[pb.EmbedRequest], float | None]:
        """What a stream that has sent ``sent`` (id -> sends) should send now, and in how many
        seconds the next backed-off request falls due (None: none waits)."""
        now = time.monotonic()
        ready, wake = [], None
        for request_id, request in self.pending.items():
            if sent.get(request_id) == self.sends[request_id]:
                continue
            wait = self.not_before.get(request_id, 0.0) - now
            if wait > 0:
                wake = wait if wake is None else min(wake, wait)
                continue
            ready.append(request)
        for request_id in [i for i in sent if i not in self.pending]:
            del sent[request_id]
        for request in ready:
            sent[request.id] = self.sends[request.id]
        return ready, wake

    def take_chunk(self, chunk: pb.EmbedResponse) -> None:
        """Account for one answer chunk; a finished answer moves to ``done``."""
        if chunk.id not in self.pending:
            return  # an answer to a request already answered (resent after a failure)
        if chunk.HasField("error") and chunk.error.code:
            self.assemblers.pop(chunk.id, None)
            error = BertserveError.from_status(
                chunk.error.code, chunk.error.message, chunk.id, chunk.error.reason
            )
            sends = self.sends[chunk.id]
            if error.retryable and sends < ITEM_ATTEMPTS:
                self.sends[chunk.id] = sends + 1  # sent again, after a backoff
                self.not_before[chunk.id] = time.monotonic() + backoff(sends - 1)
                self.move |= error.code == grpc.StatusCode.UNAVAILABLE
                return
            self.forget(chunk.id)
            self.done[chunk.id] = error
            return
        assembler = self.assemblers.setdefault(chunk.id, ChunkAssembler())
        if assembler.add(chunk):
            del self.assemblers[chunk.id]
            self.forget(chunk.id)
            assert assembler.first is not None
            self.done[chunk.id] = EmbedResult.from_outputs(
                assembler.first, assembler.outputs(), self.num_layers
            )

    def forget(self, request_id: str) -> None:
        self.pending.pop(request_id)
        self.sends.pop(request_id, None)
        self.not_before.pop(request_id, None)

    def restart(self) -> None:
        """Forget half-received answers: their requests go out again on a new stream."""
        self.assemblers.clear()
        self.move = False

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
        open_stream: Callable[
            [Iterator[pb.EmbedRequest], float | None], Iterator[pb.EmbedResponse]
        ],
        requests: Iterator[pb.EmbedRequest],
        *,
        window: int,
        num_layers: int | None,
        errors: str = "raise",
        deadline: float | None = None,
    ) -> None:
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
        self._deadline = deadline
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
        sent: dict[str, int] = {}
        while True:
            with self._cond:
                while True:
                    if self._generation != generation or self._closed:
                        return
                    unsent, wake = state.due(sent)
                    if unsent:
                        break
                    if state.exhausted and not state.pending:
                        return  # half-close: the server answers what is pending, then ends
                    if not state.exhausted and state.in_window < state.window:
                        try:
                            state.register(next(self._source))
                        except StopIteration:
                            state.exhausted = True
                        except BaseException as exc:  # the caller's iterable failed
                            state.source_error = exc
                            state.exhausted = True
                        continue
                    self._cond.wait(0.5 if wake is None else min(0.5, wake))
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
                call = self._open(self._requests(generation), remaining(self._deadline))
                try:
                    for chunk in call:
                        attempts = 0
                        with self._cond:
                            state.take_chunk(chunk)
                            ready = state.pop_ready()
                            self._cond.notify_all()
                        for item in ready:
                            yield self._deliver(item)
                        if state.move:
                            break  # the replica is draining: the rest go to a new call
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
                    time.sleep(backoff(attempts))
                    attempts += 1
                    continue
                if state.move:
                    call.cancel()
                    with self._cond:
                        self._generation += 1
                        self._cond.notify_all()
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
