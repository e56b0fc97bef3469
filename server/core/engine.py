"""The request path every front door shares, knowing no protocol: resolve the variant,
validate once, bound the cost from cheap facts, tokenize, batch, compute features."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from bertserve.server.core.long_text import ERROR_ADVICE, Prepared, assemble, prepare
from bertserve.server.core.request import (
    MAX_NAME_BYTES,
    Request,
    Result,
    Texts,
    Timing,
    Tokens,
)
from bertserve.server.core.validate import (
    LongText,
    ModelFacts,
    answer_bytes,
    check_identifier,
    check_identifiers,
    feature_spec,
    long_text,
    token_sequences,
    truncates,
)
from bertserve.server.errors import AnswerTooLarge, InvalidArgument, Unavailable
from bertserve.server.features import FeatureSpec
from bertserve.server.tokenize import ADVICE, Sequence

SHUTTING_DOWN = "the server is shutting down; retry on another replica"
# Below these sizes work stays on the event loop: a thread hop would cost more than the work.
INLINE_TEXTS = 16
INLINE_CHARS = 4096
INLINE_TOKENS = 16 * 512
INLINE_SPANS = 256
# Bytes a Tokenize answer takes at least per token (padded or not): the token string, the id,
# mask, type, offsets and special flag each take a byte or more on the wire.
TOKENIZE_BYTES_PER_TOKEN = 8

# ``admit(estimated answer bytes)``: runs before computing; may refuse or wait for room
Admit = Callable[[int], Awaitable[None]]


def answer_limit(limit: int, where: str, advice: str) -> Admit:
    """An ``admit`` that refuses answers estimated over ``limit`` bytes."""

    async def admit(size: int) -> None:
        check_answer_size(size, limit, where, advice)

    return admit


def check_answer_size(
    size: int, limit: int, where: str, advice: str, estimated: bool = True
) -> None:
    """AnswerTooLarge (RESOURCE_EXHAUSTED) naming the size, the limit and what to do."""
    if size > limit:
        raise AnswerTooLarge(
            f"the answer {'would be' if estimated else 'is'} {size / 2**20:.1f} MiB, over "
            f"{where}; {advice}"
        )


# LoadedVariant -> its facts; entries go with their variant
_FACTS: weakref.WeakKeyDictionary[Any, ModelFacts] = weakref.WeakKeyDictionary()


def facts_of(variant: Any) -> ModelFacts:
    """The plain facts of a LoadedVariant that validation needs (computed once)."""
    facts = _FACTS.get(variant)
    if facts is None:
        facts = ModelFacts(
            model=variant.model.name,
            variant=variant.package.name,
            num_layers=variant.num_layers,
            hidden_size=variant.hidden_size,
            max_length=variant.max_length,
            vocab_size=variant.vocab_size,
            type_vocab_size=variant.type_vocab_size,
            default_pooling=variant.model.manifest.get("default_pooling", "cls"),
            has_logits="logits" in variant.runtime.output_names,
        )
        _FACTS[variant] = facts
    return facts


class Engine:
    """The core of a server: a ModelRegistry, the drain state and the request limits."""

    def __init__(self, registry: Any, max_request_sequences: int) -> None:
        self.registry = registry
        self.max_request_sequences = max_request_sequences
        self.draining = False
        self.ready = False  # True once the default variants are loaded and warmed up

    def check_open(self) -> None:
        if self.draining:
            raise Unavailable(SHUTTING_DOWN)

    async def variant(self, model: str, variant: str = "") -> Any:
        """The loaded variant a request names (its names checked for length first)."""
        check_identifier(model, "model", MAX_NAME_BYTES)
        check_identifier(variant, "variant", MAX_NAME_BYTES)
        return await self.registry.variant(model, variant)

    def check_count(self, count: int, field: str, variant: Any) -> None:
        """INVALID_ARGUMENT when one request carries more texts or sequences than may queue."""
        queue = variant.batcher.settings.max_queue_sequences
        limit = min(self.max_request_sequences, queue)
        if count > limit:
            which = (
                "max_request_sequences"
                if limit == self.max_request_sequences
                else ("the most the model's queue holds, max_queue_sequences")
            )
            raise InvalidArgument(
                f"{count} in one request; allowed 1..{limit} ({which}): split them over "
                "several requests, or stream them",
                (field,),
            )

    def spec(self, request: Request, variant: Any) -> FeatureSpec:
        """Identifiers, counts and options checked against the variant: the features to
        compute."""
        check_identifiers(request.id, request.model, request.variant)
        inputs = request.inputs
        field = "texts" if isinstance(inputs, Texts) else "sequences"
        if not len(inputs):
            raise InvalidArgument("empty; allowed one or more", (field,))
        self.check_count(len(inputs), field, variant)
        spec = feature_spec(request.options, facts_of(variant))
        self.long_text(request, variant)
        return spec

    def long_text(self, request: Request, variant: Any) -> LongText:
        """The request's long-text options checked against the variant and its inputs."""
        inputs = request.inputs
        texts = isinstance(inputs, Texts)
        pairs = texts and bool(inputs.pairs)  # type: ignore[union-attr]
        return long_text(request.options, facts_of(variant), texts, pairs)

    async def sequences(self, request: Request, variant: Any) -> list[Sequence]:
        """The request's inputs as model sequences: texts tokenized, token ids checked; off
        the event loop when large."""
        inputs, truncate = request.inputs, truncates(request.options)
        if isinstance(inputs, Texts):
            texts, pairs = inputs.texts, inputs.pairs or None
            args = (texts, pairs, truncate, advice(request))
            if small(texts):
                return variant.tokenize(*args)
            return await asyncio.to_thread(variant.tokenize, *args)
        assert isinstance(inputs, Tokens)
        facts = facts_of(variant)
        ids = sum(min(len(s.input_ids), facts.max_length) for s in inputs.sequences)
        if len(inputs) <= INLINE_TEXTS and ids <= INLINE_TOKENS:
            return token_sequences(inputs, facts, truncate)
        return await asyncio.to_thread(token_sequences, inputs, facts, truncate)

    async def embed(
        self,
        request: Request,
        timeout: float | None,
        admit: Admit,
        *,
        padded: bool = False,
        variant: Any = None,
    ) -> tuple[Result, FeatureSpec, Any]:
        """Features of one request: the result, the spec computed and the variant that
        answered. ``admit(answer bytes)`` runs before computing (``padded``: the front door
        sends token-level outputs padded to the longest sequence)."""
        started = time.monotonic_ns()
        self.check_open()
        if variant is None:
            variant = await self.variant(request.model, request.variant)
        spec = self.spec(request, variant)
        # a request that finds the queue full is refused before any work
        variant.batcher.admit(len(request.inputs))
        settings = self.long_text(request, variant)
        if settings.expands:
            args = (request, spec, settings, variant, timeout, admit, padded, started)
            return await self._embed_long(*args), spec, variant
        tokenize_start = time.monotonic_ns()
        sequences = await self.sequences(request, variant)
        tokenization_ns = time.monotonic_ns() - tokenize_start
        lengths = [len(s) for s in sequences]
        await admit(answer_bytes(spec, lengths, variant.hidden_size, padded))
        computed = await variant.embed(sequences, spec, timeout)
        result = Result(computed.outputs, computed.lengths, computed.truncated)
        return _timed(result, computed, tokenization_ns, started), spec, variant

    async def _embed_long(
        self,
        request: Request,
        spec: FeatureSpec,
        settings: LongText,
        variant: Any,
        timeout: float | None,
        admit: Admit,
        padded: bool,
        started: int,
    ) -> Result:
        """A request that chunks or asks for spans: its texts as windows through the batcher
        like any other sequences, counted and sized before any is computed, then stitched and
        pooled into the answer's outputs."""
        texts = list(request.inputs.texts)  # type: ignore[union-attr]
        tokenize_start = time.monotonic_ns()
        args = (variant.tokenizer, texts, settings, advice(request))
        inline = small(texts) and len(settings.spans) <= INLINE_SPANS
        prepared = prepare(*args) if inline else await asyncio.to_thread(prepare, *args)
        tokenization_ns = time.monotonic_ns() - tokenize_start
        self.check_windows(prepared, settings, variant)
        window_tokens = sum(len(s) for s in prepared.sequences)
        variant.batcher.admit(len(prepared.sequences), window_tokens)
        chunks = len(prepared.sequences) if settings.return_chunks else 0
        size = answer_bytes(
            spec, prepared.lengths, variant.hidden_size, padded, chunks, len(prepared.spans)
        )
        await admit(size)
        # unnormalized (normalized once pooled across windows); token rows when spans need them
        inner = dataclasses.replace(
            spec,
            normalize=False,
            token_embeddings=spec.token_embeddings or len(prepared.spans) > 0,
        )
        computed = await variant.embed(prepared.sequences, inner, timeout)
        work = (prepared, computed.outputs, spec, settings)
        if window_tokens <= INLINE_TOKENS and len(prepared.spans) <= INLINE_SPANS:
            outputs = assemble(*work)
        else:
            outputs = await asyncio.to_thread(assemble, *work)
        result = Result(outputs, prepared.lengths, prepared.truncated)
        return _timed(result, computed, tokenization_ns, started)

    def check_windows(self, prepared: Prepared, settings: LongText, variant: Any) -> None:
        """INVALID_ARGUMENT when the texts make more windows than one request may queue."""
        windows = len(prepared.sequences)
        limit = min(self.max_request_sequences, variant.batcher.settings.max_queue_sequences)
        if windows > limit:
            raise InvalidArgument(
                f"{len(prepared.documents)} texts make {windows} windows of chunk_tokens="
                f"{settings.window} overlapping by chunk_overlap={settings.overlap}; allowed at "
                f"most {limit} windows in one request (max_request_sequences, "
                "max_queue_sequences): send fewer or shorter texts per request, or a larger "
                "chunk_tokens or smaller chunk_overlap",
                ("texts",),
            )

    async def tokenize(
        self, texts: Texts, model: str, truncate: bool, pad_to: int, limit: int
    ) -> tuple[list[Any], list[int], Any]:
        """Encodings (padded to ``pad_to``) of ``texts`` and the tokens dropped from each; an
        answer that could not fit in ``limit`` bytes is refused before tokenizing (from the
        padded length) and again before it is built."""
        self.check_open()
        variant = await self.variant(model)
        if not len(texts):
            raise InvalidArgument("empty; allowed: one or more texts", ("texts",))
        if pad_to > variant.max_length:
            raise InvalidArgument(
                f"={pad_to}: over the model's limit; allowed 0..{variant.max_length}", ("pad_to",)
            )
        self.check_count(len(texts), "texts", variant)
        advice = "send fewer or shorter texts per request, or a smaller pad_to"
        least = len(texts) * max(pad_to, 2) * TOKENIZE_BYTES_PER_TOKEN
        check_answer_size(least, limit, "the 4 MiB message limit", advice)

        def work() -> tuple[list[Any], list[int]]:
            pairs = list(texts.pairs) if texts.pairs else None
            encodings, dropped = variant.tokenizer.encode_counted(
                list(texts.texts), pairs, truncate=truncate
            )
            tokens = sum(max(len(e.ids), pad_to) for e in encodings)
            check_answer_size(
                tokens * TOKENIZE_BYTES_PER_TOKEN, limit, "the 4 MiB message limit", advice
            )
            if pad_to:
                for encoding in encodings:
                    variant.tokenizer.pad(encoding, pad_to)
            return encodings, dropped

        encodings, dropped = await asyncio.to_thread(work)
        return encodings, dropped, variant


def small(texts: Any) -> bool:
    """Texts few and short enough to tokenize on the event loop."""
    return len(texts) <= INLINE_TEXTS and sum(map(len, texts)) <= INLINE_CHARS


def advice(request: Request) -> str:
    """What a refusal of a text over the window advises."""
    return ERROR_ADVICE if request.options.long_text == "error" else ADVICE


def _timed(result: Result, computed: Any, tokenization_ns: int, started: int) -> Result:
    """``result`` with the timing of its request: tokenizing, then what the batcher measured."""
    result.timing = Timing(
        tokenization_ns=tokenization_ns,
        queue_ns=computed.queue_ns,
        inference_ns=computed.inference_ns,
        tokens=computed.tokens,
        computed_tokens=computed.computed_tokens,
        total_ns=time.monotonic_ns() - started,
    )
    return result
