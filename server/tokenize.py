"""Tokenization with the `tokenizers` library, padding and truncation set explicitly.

A sentence-transformers tokenizer.json may carry its own fixed padding and truncation
(all-MiniLM-L6-v2's pads everything to 128 and cuts silently); both are switched off here
and applied only as the model's limit and the request ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bertserve.server.errors import InvalidArgument
from tokenizers import Encoding, Tokenizer

# A text over this many characters per token of the model's limit is tokenized only as far as
# the limit needs (no BERT vocabulary averages 8 characters a token).
PREFIX_CHARS_PER_TOKEN = 8
# Tokens beyond the limit a prefix must give before its cut word cannot matter.
WORD_SLACK = 100
# What to do about a text over the limit, said in the refusal.
ADVICE = "shorten it or set truncate=true"


@dataclass
class Sequence:
    """One model input: int64 arrays of equal length (real tokens only), plus what was cut."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    truncated: int = 0

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class TextTokenizer:
    """A model's WordPiece tokenizer with limits taken from the manifest."""

    def __init__(self, path: Path, max_length: int) -> None:
        self.max_length = max_length
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._truncating = Tokenizer.from_file(str(path))
        self._truncating.no_padding()
        self._truncating.enable_truncation(max_length=max_length)
        self.pad_id = self._tokenizer.token_to_id("[PAD]") or 0

    def _bounded(self, text: str) -> tuple[str, bool]:
        """``text``, or a prefix of it whose tokens already exceed the limit (True).

        The prefix grows fourfold from PREFIX_CHARS_PER_TOKEN characters a token of the
        limit, so an over-long text costs a few times the limit, not its own length. Only
        the word the cut falls in can tokenize differently; it comes after all the kept tokens
        once the prefix has WORD_SLACK tokens more than the limit (a WordPiece word over 100
        characters is one [UNK] either way).
        """
        size = self.max_length * PREFIX_CHARS_PER_TOKEN
        while size < len(text):
            prefix = text[:size]
            tokens = len(self._tokenizer.encode(prefix, add_special_tokens=False).ids)
            if tokens > self.max_length + WORD_SLACK:
                return prefix, True
            size *= 4
        return text, False

    def encode_counted(
        self,
        texts: list[str],
        pairs: list[str] | None = None,
        *,
        truncate: bool = False,
        advice: str = ADVICE,
    ) -> tuple[list[Encoding], list[int]]:
        """Encodings of texts (and their second segments) and the tokens truncation dropped
        from each; too long without truncate: INVALID_ARGUMENT.

        A text far over the limit is tokenized only as far as needed (see ``_bounded``):
        without truncate it is refused from that prefix; with truncate its ``dropped`` count
        is of that prefix, a lower bound.
        """
        if pairs and len(pairs) != len(texts):
            raise InvalidArgument(
                f"{len(pairs)} given for {len(texts)} texts; allowed: none or one per text",
                ("pairs",),
            )
        long = self.max_length * PREFIX_CHARS_PER_TOKEN
        segments = [("texts", texts)] + ([("pairs", pairs)] if pairs else [])
        for field_name, values in segments:
            for index, text in enumerate(values):
                if not text:
                    raise InvalidArgument(
                        "empty string; allowed: a text of at least one character",
                        (field_name, index),
                    )
                if len(text) > long:
                    values[index], cut = self._bounded(text)
                    if cut and not truncate:
                        raise InvalidArgument(
                            f"over {self.max_length} tokens (its first {len(values[index]):,} "
                            f"characters alone are), longer than the model's limit of "
                            f"{self.max_length}; {advice}",
                            (field_name, index),
                        )
        inputs = list(zip(texts, pairs, strict=True)) if pairs else list(texts)
        encodings = self._tokenizer.encode_batch(inputs)
        long_ones = [i for i, e in enumerate(encodings) if len(e.ids) > self.max_length]
        dropped = [0] * len(encodings)
        if long_ones and not truncate:
            index = long_ones[0]
            raise InvalidArgument(
                f"{len(encodings[index].ids)} tokens, longer than the model's limit of "
                f"{self.max_length}; {advice}",
                ("texts", index),
            )
        if long_ones:  # only the long ones again, cut
            cut = self._truncating.encode_batch([inputs[i] for i in long_ones])
            for index, encoding in zip(long_ones, cut, strict=True):
                dropped[index] = len(encodings[index].ids) - len(encoding.ids)
                encodings[index] = encoding
        return encodings, dropped

    def encode_whole(self, texts: list[str]) -> list[Encoding]:
        """Encodings of whole texts, however long (for windows over them), with offsets in
        code points."""
        for index, text in enumerate(texts):
            if not text:
                raise InvalidArgument(
                    "empty string; allowed: a text of at least one character", ("texts", index)
                )
        return self._tokenizer.encode_batch(list(texts))

    def sequences(
        self,
        texts: list[str],
        pairs: list[str] | None = None,
        *,
        truncate: bool = False,
        advice: str = ADVICE,
    ) -> list[Sequence]:
        """Model inputs of the texts, each with the count of tokens truncation dropped."""
        texts, pairs = list(texts), list(pairs) if pairs else None
        result = []
        encodings, dropped = self.encode_counted(texts, pairs, truncate=truncate, advice=advice)
        for encoding, cut in zip(encodings, dropped, strict=True):
            result.append(
                Sequence(
                    np.asarray(encoding.ids, dtype=np.int64),
                    np.asarray(encoding.attention_mask, dtype=np.int64),
                    np.asarray(encoding.type_ids, dtype=np.int64),
                    truncated=cut,
                )
            )
        return result

    def pad(self, encoding: Encoding, length: int) -> None:
        """Pad one encoding in place to ``length`` tokens (no-op when it is already longer)."""
        encoding.pad(length, pad_id=self.pad_id, pad_token="[PAD]")
