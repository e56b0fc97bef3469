"""Client-side tokenization with the server's own tokenizer files (needs ``tokenizers``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TOKENIZERS_HINT = (
    "client-side tokenization needs the 'tokenizers' package: pip install tokenizers "
    "(or let the server tokenize: pass texts to embed)"
)


class ClientTokenizer:
    """A model's tokenizer, set up the way the server sets it up: no padding, its length limit.

    ``encode`` returns token sequences ready for ``Client.embed``.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self._tokenizer = tokenizer
        self.max_length = max_length
        # tokenizer.json files of sentence-transformers pad and truncate to a fixed
        # length of their own; both are chosen per call here instead.
        tokenizer.no_padding()
        tokenizer.no_truncation()

    def encode(
        self,
        texts: str | Sequence[str],
        pairs: Sequence[str] | None = None,
        *,
        truncate: bool = False,
    ) -> list[dict[str, list[int]]]:
        """Per text ``{"input_ids", "attention_mask", "token_type_ids"}`` lists of ints.

        With ``truncate`` sequences are cut to the model's ``max_length``; without, a
        longer one is sent whole and the server rejects it (INVALID_ARGUMENT).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if truncate:
            self._tokenizer.enable_truncation(self.max_length)
        try:
            if pairs is None:
                encodings = self._tokenizer.encode_batch(texts)
            else:
                pairs = [pairs] if isinstance(pairs, str) else list(pairs)
                if len(pairs) != len(texts):
                    raise ValueError(f"got {len(pairs)} pairs for {len(texts)} texts")
                encodings = self._tokenizer.encode_batch(list(zip(texts, pairs, strict=True)))
        finally:
            if truncate:
                self._tokenizer.no_truncation()
        return [
            {
                "input_ids": list(e.ids),
                "attention_mask": list(e.attention_mask),
                "token_type_ids": list(e.type_ids),
            }
            for e in encodings
        ]

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, specials included and without truncation."""
        return [len(encoding.ids) for encoding in self._tokenizer.encode_batch(list(texts))]

    def tokens(self, text: str) -> list[str]:
        """The WordPiece tokens of one text, specials included."""
        return list(self._tokenizer.encode(text).tokens)


def load_tokenizer(path: str | Path) -> ClientTokenizer:
    """The tokenizer of a model folder (``<repo>/<model>/<variant>``) or a ``tokenizer.json``.

    The length limit comes from the folder's ``manifest.json`` (``max_length``), else
    from ``config.json`` (``max_position_embeddings``), else 512.
    """
    try:
        from tokenizers import Tokenizer
    except ModuleNotFoundError:
        raise ModuleNotFoundError(TOKENIZERS_HINT, name="tokenizers") from None
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {file}: point at a model variant folder")
    max_length = 512
    manifest, config = folder / "manifest.json", folder / "config.json"
    if manifest.is_file():
        max_length = int(json.loads(manifest.read_text())["max_length"])
    elif config.is_file():
        max_length = int(json.loads(config.read_text()).get("max_position_embeddings", 512))
    return ClientTokenizer(Tokenizer.from_file(str(file)), max_length)
