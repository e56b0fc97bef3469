"""The blocking Python client: numpy in, numpy out."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grpc
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
from .stream import CALL_ATTEMPTS, StreamItem, SyncEmbedStream, backoff, remaining
from .tensors import tensor_to_numpy

EMBED_DOC = """
        ``inputs``: one text, a list of texts, or a batch of token sequences (lists of
        ids, or mappings with ``input_ids`` and optional ``attention_mask`` and
        ``token_type_ids``, e.g. from ``load_tokenizer(...).encode``).
        ``pairs``: second segments, one per text.
        ``output``: "sentence" (default), "tokens", or both as a tuple.
        ``pooling``: "cls", "pooler", "mean", "max" or "none"; None: the model's default.
        ``layers``: hidden states to return: an index, a list (``[-1, -2]``, negative
        counts from the last layer), "all", or "-1,-2".
        ``aggregate``: the token representation: "last", "concat_last_4", "sum_last_4",
        "mean_all". ``normalize``: L2-normalise the sentence vectors.
        ``dtype``: "float32", "float16" or "bfloat16" on the wire (bfloat16 is returned
        as float32, exactly). ``truncate``: cut sequences over the model's limit
        (``result.truncated`` tells how many tokens were dropped) instead of failing.
"""


CLASSIFY_DOC = """
        ``inputs``/``pairs``: as for ``embed`` (texts, text pairs or token sequences).
        ``top_k``: how many labels per input, best first (0: every label).
        ``logits``: also return the raw logits (``result.logits``, float32).
        ``output``, ``pooling``, ``layers``, ``aggregate``, ``normalize``, ``dtype``:
        embedding outputs of the same forward pass, as for ``embed`` (``result.features``);
        none unless one is given.
"""


class Client:
    """A blocking client of one bertserve deployment.

    ``target``: ``host:port`` (default ``$BERTSERVE_TARGET`` or 127.0.0.1:50051), a list
    ``host1:port,host2:port`` or ``dns:///name:port``; calls are balanced round-robin over
    every address and retried on UNAVAILABLE. ``model``/``variant``: defaults for every
    call (empty: the server's). ``timeout``: seconds per unary call. ``tls``: True, a
    root-certificate PEM path or ``grpc.ChannelCredentials``. ``token``: sent as
    ``authorization: Bearer <token>``. Every failure raises ``BertserveError``.

    >>> with Client("127.0.0.1:50051") as client:
    ...     vectors = client.embed(["I love Paris"]).sentence_embedding  # (1, 384) float32
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
        self._channel = open_channel(grpc, self.target, tls, options)
        self._stub = BertServiceStub(self._channel)
        self._health = self._channel.unary_unary(health_codec.HEALTH_CHECK)
        self._metadata = auth_metadata(token)
        self._infos: dict[str, ModelInfo] = {}
        self._ids = itertools.count()

    # -- plumbing ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel (in-flight calls are cancelled)."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        timeout = timeout if timeout is not None else self.timeout
        # one deadline for every attempt: a retry gets what is left, not a new timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in range(CALL_ATTEMPTS):
            try:
                return method(request, timeout=remaining(deadline), metadata=self._metadata)
            except grpc.RpcError as exc:
                # The channel retries calls a replica never answered; this covers one
                # that failed after its reply had begun (all methods are idempotent).
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt + 1 == CALL_ATTEMPTS:
                    raise BertserveError.from_rpc_error(exc) from None
            time.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    def _model_info(self, model: str) -> ModelInfo:
        if model not in self._infos:
            self._infos[model] = self.info(model)
        return self._infos[model]

    # -- the API -----------------------------------------------------------------------

    def embed(
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
        """Features of one batch as an ``EmbedResult``.

        Token-level answers too large for one 4 MB message travel over EmbedStream
        in chunks and are joined here.
        """
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
        info = self._model_info(options.model) if options.needs_info else None
        request = options.to_request(inputs, pairs, info, request_id=str(next(self._ids)))
        num_layers = info.num_layers if info else None
        timeout = timeout if timeout is not None else self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        if needs_stream(request, info):
            return self._embed_streamed(split_request(request, info), num_layers, deadline)
        try:
            response = self._call(self._stub.Embed, request, remaining(deadline))
        except BertserveError as exc:
            if exc.reason != ANSWER_TOO_LARGE:
                raise
            # over 4 MB after all: in pieces over EmbedStream, within what is left of the timeout
            pieces = split_request(request, info)
            return self._embed_streamed(pieces, num_layers, deadline)
        outputs = {piece.name: tensor_to_numpy(piece.tensor) for piece in response.outputs}
        return EmbedResult.from_outputs(response, outputs, num_layers)

    embed.__doc__ = (embed.__doc__ or "") + EMBED_DOC

    def _embed_streamed(
        self, requests: list[pb.EmbedRequest], num_layers: int | None, deadline: float | None
    ) -> EmbedResult:
        stream = SyncEmbedStream(
            self._open_stream, iter(requests), window=4, num_layers=num_layers, deadline=deadline
        )
        results = list(stream)  # errors="raise": every item is an EmbedResult
        return join_results(results, num_layers)  # type: ignore[arg-type]

    def _open_stream(
        self, requests: Iterator[pb.EmbedRequest], timeout: float | None = None
    ) -> Iterator[pb.EmbedResponse]:
        return self._stub.EmbedStream(requests, timeout=timeout, metadata=self._metadata)

    def embed_stream(
        self,
        batches: Iterable[Inputs],
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
    ) -> Iterator[StreamItem]:
        """Embed many batches over one EmbedStream; yields one ``EmbedResult`` per batch, in order.

        At most ``window`` batches are in flight or waiting to be yielded, so memory
        stays bounded however long ``batches`` is (it is read lazily). A batch the
        server rejects raises ``BertserveError`` where its result would be, or with
        ``errors="return"`` is yielded as that ``BertserveError`` and the stream goes
        on. Requests in flight when a replica fails with UNAVAILABLE are sent again.
        Options as in ``embed`` (the same for every batch).
        """
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
        info = self._model_info(options.model) if options.needs_info else None
        requests = (
            options.to_request(batch, None, info, request_id=str(index))
            for index, batch in enumerate(batches)
        )
        return iter(
            SyncEmbedStream(
                self._open_stream,
                requests,
                window=window,
                num_layers=info.num_layers if info else None,
                errors=errors,
            )
        )

    def embed_many(
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
        for batch, result in zip(batches, results, strict=True):
            rows.add(batch, result)
        return rows.result()

    def tokenize(
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
        response = self._call(self._stub.Tokenize, request)
        return [Encoding.from_pb(e) for e in response.encodings]

    def classify(
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
        info = self._model_info(model) if features and features.needs_info else None
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
        response = self._call(self._stub.Classify, request, timeout)
        return ClassifyResult.from_pb(response, info.num_layers if info else None)

    classify.__doc__ = (classify.__doc__ or "") + CLASSIFY_DOC

    def info(self, model: str | None = None) -> ModelInfo:
        """What the server says about ``model`` (default: the client's, else the server's)."""
        name = self.model if model is None else model
        response = self._call(self._stub.ModelInfo, pb.ModelInfoRequest(model=name))
        return ModelInfo.from_pb(response.model)

    def models(self) -> list[ModelInfo]:
        """Every model the server serves."""
        response = self._call(self._stub.ListModels, pb.ListModelsRequest())
        return [ModelInfo.from_pb(m) for m in response.models]

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status of ``service`` ("" = the whole server): "SERVING", ..."""
        data = self._call(self._health, health_codec.encode_request(service), timeout)
        return health_codec.decode_response(data)
