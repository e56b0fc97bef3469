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

    def encode_counted(
        self, texts: list[str], pairs: list[str] | None = None, *, truncate: bool = False
    ) -> tuple[list[Encoding], list[int]]:
        """Encodings of texts (and their second segments) and the tokens truncation dropped
        from each; too long without truncate: INVALID_ARGUMENT."""
        if pairs and len(pairs) != len(texts):
            raise InvalidArgument(
                f"text_pairs: {len(pairs)} given for {len(texts)} texts; "
                "allowed: none or one per text"
            )
        for field_name, values in (("texts", texts), ("text_pairs", pairs or [])):
            for index, text in enumerate(values):
                if not text:
                    raise InvalidArgument(
                        f"{field_name}[{index}]: empty string; allowed: a text of at least one "
                        "character"
                    )
        inputs = list(zip(texts, pairs, strict=True)) if pairs else list(texts)
        encodings = self._tokenizer.encode_batch(inputs)
        if truncate:
            cut = self._truncating.encode_batch(inputs)
            return cut, [len(f.ids) - len(c.ids) for f, c in zip(encodings, cut, strict=True)]
        for index, encoding in enumerate(encodings):
            if len(encoding.ids) > self.max_length:
                raise InvalidArgument(
                    f"texts[{index}]: {len(encoding.ids)} tokens, longer than the model's limit of "
                    f"{self.max_length}; shorten it or set truncate=true"
                )
        return encodings, [0] * len(encodings)

    def sequences(
        self, texts: list[str], pairs: list[str] | None = None, *, truncate: bool = False
    ) -> list[Sequence]:
        """Model inputs of the texts, each with the count of tokens truncation dropped."""
        result = []
        encodings, dropped = self.encode_counted(texts, pairs, truncate=truncate)
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
