"""The blocking Python client: numpy in, numpy out."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar, Unpack

import grpc
import numpy as np
from bertserve.v1 import bertserve_pb2 as pb

from .calls import SPLIT_WINDOW, ClientBase, Plan, PlanRun, SentenceRows, Stream
from .errors import BertserveError
from .request import OPTIONS_DOC, ClassifyArgs, EmbedArgs, Inputs, StreamArgs, TokenizeArgs
from .results import ClassifyResult, EmbedResult, Encoding, ModelInfo
from .stream import StreamItem, SyncEmbedStream

T = TypeVar("T")

EMBED_DOC = (
    """
        ``inputs``: one text, a list of texts, or a batch of token sequences (lists of
        ids, or mappings with ``input_ids`` and optional ``attention_mask`` and
        ``token_type_ids``, e.g. from ``load_tokenizer(...).encode``).
        ``pairs``: second segments, one per text. ``model``/``variant``: this call's
        (default: the client's). ``timeout``: seconds for the whole call."""
    + OPTIONS_DOC
)

CLASSIFY_DOC = """
        ``inputs``/``pairs``: as for ``embed`` (texts, text pairs or token sequences).
        ``top_k``: how many labels per input, best first (0: every label).
        ``logits``: also return the raw logits (``result.logits``, float32).
        ``output``, ``pooling``, ``layers``, ``aggregate``, ``normalize``, ``dtype`` (or
        ``options``): embedding outputs of the same forward pass, as for ``embed``
        (``result.features``); none unless one is given. ``truncate``: as for ``embed``.
"""


class Client(ClientBase):
    """A blocking client of one bertserve deployment.

    ``target``: ``host:port`` (default ``$BERTSERVE_TARGET`` or 127.0.0.1:50051), a list
    ``host1:port,host2:port`` or ``dns:///name:port``; calls are balanced round-robin over
    every address and retried on UNAVAILABLE. ``model``/``variant``: defaults for every
    call (empty: the server's). ``timeout``: seconds per unary call. ``tls``: True, a
    root-certificate PEM path or ``grpc.ChannelCredentials``. ``token``: sent as
    ``authorization: Bearer <token>``. ``options``: gRPC channel options. Every failure
    raises ``BertserveError``.

    >>> with Client("127.0.0.1:50051") as client:
    ...     vectors = client.embed(["I love Paris"]).sentence_embedding  # (1, 384) float32
    """

    _grpc = grpc

    # -- plumbing ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel (in-flight calls are cancelled)."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, plan: Plan[T]) -> T:
        run = PlanRun(plan, self._connection)
        while (step := run.next()) is not None:
            try:
                run.reply = step.start(self)
            except (grpc.RpcError, BertserveError) as exc:
                run.fail(exc)
        return run.result

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _collect(self, step: Stream) -> list[EmbedResult]:
        stream = SyncEmbedStream(
            self._open_stream,
            iter(step.requests),
            window=SPLIT_WINDOW,
            num_layers=step.num_layers,
            deadline=step.deadline,
        )
        return list(stream)  # type: ignore[arg-type]  # errors="raise": only results

    def _open_stream(
        self, requests: Iterator[pb.EmbedRequest], timeout: float | None = None
    ) -> Iterator[pb.EmbedResponse]:
        return self._stub.EmbedStream(requests, timeout=timeout, metadata=self._metadata)

    # -- the API -----------------------------------------------------------------------

    def embed(self, inputs: Inputs, **call: Unpack[EmbedArgs]) -> EmbedResult:
        """Features of one batch as an ``EmbedResult``.

        Token-level answers too large for one 4 MB message travel over EmbedStream
        in chunks and are joined here.
        """
        return self._run(self._embed_plan(inputs, **call))

    embed.__doc__ = (embed.__doc__ or "") + EMBED_DOC

    def embed_stream(
        self,
        batches: Iterable[Inputs],
        *,
        window: int = 8,
        errors: str = "raise",
        **call: Unpack[StreamArgs],
    ) -> Iterator[StreamItem]:
        """Embed many batches over one EmbedStream; yields one ``EmbedResult`` per batch, in order.

        At most ``window`` batches are in flight or waiting to be yielded, so memory
        stays bounded however long ``batches`` is (it is read lazily). A batch the
        server rejects raises ``BertserveError`` where its result would be, or with
        ``errors="return"`` is yielded as that ``BertserveError`` and the stream goes
        on. Requests in flight when a replica fails with UNAVAILABLE are sent again.
        Options as in ``embed`` (the same for every batch).
        """
        source = self._run(self._stream_source(**call))
        requests = (source.request(batch, index) for index, batch in enumerate(batches))
        stream = SyncEmbedStream(
            self._open_stream, requests, window=window, num_layers=source.num_layers, errors=errors
        )
        return self._advised(iter(stream))

    def _advised(self, items: Iterator[StreamItem]) -> Iterator[StreamItem]:
        try:
            yield from items
        except BertserveError as exc:
            raise exc.advise(self._connection) from None

    def embed_many(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        window: int = 8,
        **call: Unpack[StreamArgs],
    ) -> np.ndarray:
        """Sentence vectors of many texts, (len(texts), width) float32 in input order.

        The texts are sent over one EmbedStream as batches of ``batch_size`` texts of about
        one length (sorted by length, ``window`` batches in flight), which keeps padding
        small; other options as in ``embed``.
        """
        many = SentenceRows(texts, batch_size)
        for result in self.embed_stream(many.batches(), window=window, **call):
            many.add(result)
        return many.rows.result()

    def tokenize(self, texts: str | Sequence[str], **call: Unpack[TokenizeArgs]) -> list[Encoding]:
        """The server's tokenization of each text: tokens, ids, masks, offsets.

        ``pairs``: second segments, one per text. ``pad_to``: pad every sequence to this
        many tokens (0: no padding). ``truncate``: cut at the model's limit. ``model``:
        this call's (default: the client's).
        """
        return self._run(self._tokenize_plan(texts, **call))

    def classify(self, inputs: Inputs, **call: Unpack[ClassifyArgs]) -> ClassifyResult:
        """Labels of a fine-tuned classifier for each input, as a ``ClassifyResult``:
        ``result.labels``, ``result[i].scores`` (label -> probability, best first).
        """
        return self._run(self._classify_plan(inputs, **call))

    classify.__doc__ = (classify.__doc__ or "") + CLASSIFY_DOC

    def info(self, model: str | None = None) -> ModelInfo:
        """What the server says about ``model`` (default: the client's, else the server's)."""
        return self._run(self._info_plan(model))

    def models(self) -> list[ModelInfo]:
        """Every model the server serves."""
        return self._run(self._models_plan())

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status of ``service`` ("" = the whole server): "SERVING", ..."""
        return self._run(self._health_plan(service, timeout=timeout))
