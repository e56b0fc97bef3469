"""Long texts through the core: texts -> window sequences (with the characters each token
covers), and the windows' computed features -> the answer's outputs (stitched token rows,
sentence vectors pooled across windows, chunk and span vectors). No event loop, no model:
the tokenizer is handed in, the features come from the batcher like any others."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from bertserve.server.core.chunking import (
    SPECIAL_TOKENS,
    check_covered,
    check_spans,
    plan_windows,
    pool_windows,
    sentence_spans,
    span_means,
    span_tokens,
    stitch_rows,
    window_ids,
    window_spans,
)
from bertserve.server.core.validate import LongText
from bertserve.server.features import FeatureSpec, unit
from bertserve.server.tokenize import ADVICE, Sequence

# The refusal's advice when the request asked long_text=error itself.
ERROR_ADVICE = "shorten it, or set long_text to truncate or chunk"


@dataclass
class Document:
    """One text: its windows over its content tokens and the characters each token covers."""

    windows: np.ndarray  # (k, 2) [start, end) content tokens
    offsets: np.ndarray  # (tokens, 2) [start, end) code points of each content token
    length: int  # tokens of the text as computed, [CLS] and [SEP] included
    truncated: int  # tokens cut (TRUNCATE only)


@dataclass
class Prepared:
    """A request's texts as window sequences for the batcher, and its spans located."""

    sequences: list[Sequence]
    documents: list[Document]
    spans: np.ndarray  # (m, 3) [text, start, end) in code points
    ranges: np.ndarray  # (m, 2) [first, end) content tokens of each span

    @property
    def lengths(self) -> list[int]:
        return [document.length for document in self.documents]

    @property
    def truncated(self) -> list[int]:
        return [document.truncated for document in self.documents]


def prepare(tokenizer: Any, texts: list[str], settings: LongText, advice: str = ADVICE) -> Prepared:
    """Tokenize ``texts`` (whole for CHUNK, else as the plain path does, cut or refused), plan
    each one's windows, check and locate the spans (or make one per sentence)."""
    texts = list(texts)
    spans = np.zeros((0, 3), dtype=np.int64)
    if settings.spans:  # cheap checks first: before tokenizing
        spans = check_spans(settings.spans, [len(text) for text in texts])
    if settings.chunk:
        encodings = tokenizer.encode_whole(texts)
        dropped = [0] * len(texts)
    else:
        # a copy: a text far over the limit is replaced there by the prefix that is tokenized
        encodings, dropped = tokenizer.encode_counted(
            list(texts), None, truncate=settings.truncate, advice=advice
        )
    sequences: list[Sequence] = []
    documents = []
    for encoding, cut in zip(encodings, dropped, strict=True):
        ids = np.asarray(encoding.ids, dtype=np.int64)
        tokens = len(ids) - SPECIAL_TOKENS
        offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)[1:-1]
        if settings.chunk:
            windows = plan_windows(tokens, settings.window, settings.overlap)
        else:
            windows = np.array([[0, tokens]], dtype=np.int64)
        if len(windows) == 1:  # exactly the plain path's sequence
            mask = np.asarray(encoding.attention_mask, dtype=np.int64)
            types = np.asarray(encoding.type_ids, dtype=np.int64)
            sequences.append(Sequence(ids, mask, types, truncated=cut))
        else:
            for window in window_ids(ids[1:-1], windows, int(ids[0]), int(ids[-1])):
                sequences.append(Sequence(window, np.ones_like(window), np.zeros_like(window)))
        documents.append(Document(windows, offsets, len(ids), cut))
    if settings.split:
        rows = [(i, s, e) for i, text in enumerate(texts) for s, e in sentence_spans(text)]
        spans = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    ranges = np.zeros((len(spans), 2), dtype=np.int64)
    if len(spans):
        order = np.argsort(spans[:, 0], kind="stable")
        texts_of = spans[order, 0]
        for text in np.unique(texts_of).tolist():
            group = order[
                np.searchsorted(texts_of, text) : np.searchsorted(texts_of, text, "right")
            ]
            ranges[group] = span_tokens(documents[text].offsets, spans[group, 1:])
    if settings.split:  # a sentence of no token (say, of emoji the vocabulary drops) is left out
        keep = ranges[:, 1] > ranges[:, 0]
        spans, ranges = spans[keep], ranges[keep]
    else:
        check_covered(spans, ranges, np.arange(len(spans)))
    return Prepared(sequences, documents, spans, ranges)


def assemble(
    prepared: Prepared, outputs: dict[str, np.ndarray], spec: FeatureSpec, settings: LongText
) -> dict[str, np.ndarray]:
    """The answer's outputs from the windows' packed ones (computed with ``spec``'s outputs,
    token embeddings added when spans need them, nothing normalized): token-level rows
    stitched, one per token of each whole text; the sentence vector pooled across its windows
    and then normalized; chunk and span vectors with their [text, start, end) rows."""
    gather, vectors, chunk_spans = [], [], []
    row = window = 0
    sentence = outputs.get("sentence_embedding")
    for text, document in enumerate(prepared.documents):
        count = len(document.windows)
        tokens = document.length - SPECIAL_TOKENS
        gather.append(stitch_rows(document.windows, tokens, row))
        row += int((document.windows[:, 1] - document.windows[:, 0]).sum()) + SPECIAL_TOKENS * count
        if sentence is not None:
            pooled = pool_windows(
                sentence[window : window + count], document.windows, settings.pooling
            )
            vectors.append(unit(pooled) if spec.normalize else pooled)
        if settings.return_chunks:
            where = window_spans(document.offsets, document.windows)
            chunk_spans.append(np.column_stack([np.full(count, text), where]))
        window += count
    rows = np.concatenate(gather)
    result: dict[str, np.ndarray] = {}
    for name, array in outputs.items():
        if name == "sentence_embedding":
            result[name] = np.stack(vectors)
        elif name == "logits":  # never with CHUNK: one window per text
            result[name] = array
        else:
            result[name] = array[rows]
    if settings.return_chunks and sentence is not None:
        result["chunk_embeddings"] = unit(sentence) if spec.normalize else sentence
        result["chunk_spans"] = np.concatenate(chunk_spans).astype(np.int32)
    if settings.spans or settings.split:
        width = outputs["token_embeddings"].shape[1]
        starts = np.cumsum([0] + prepared.lengths[:-1])  # each text's first stitched row
        if len(prepared.spans):
            first = starts[prepared.spans[:, 0]] + 1  # + 1: past the text's [CLS]
            means = span_means(result["token_embeddings"], prepared.ranges + first[:, None])
        else:
            means = np.zeros((0, width), dtype=np.float32)
        result["span_embeddings"] = unit(means) if spec.normalize else means
        result["span_offsets"] = prepared.spans.astype(np.int32)
    if not spec.token_embeddings:  # computed for the spans only
        result.pop("token_embeddings", None)
    return result
