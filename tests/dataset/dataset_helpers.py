"""Comparing a dataset job's output with a live server's vectors."""

from __future__ import annotations

import numpy as np


def server_vectors(target: str, texts: list[str], **options: object) -> np.ndarray:
    """One live-server Embed per 256 texts: sentence vectors (rows, width) as the server sends
    them (float32; float16; bfloat16 widened to float32)."""
    from bertserve.client import Client

    parts = []
    with Client(target, model="minilm", timeout=300) as client:
        for start in range(0, len(texts), 256):
            result = client.embed(texts[start : start + 256], **options)
            parts.append(result.sentence_embedding)
    return np.concatenate(parts)


def vectors_by_id(table) -> dict[str, np.ndarray]:
    """id -> vector (float32) of a job's output table; asserts every id is there once."""
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id was written twice"
    width = table.schema.field("vector").type.list_size
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat).reshape(len(ids), width)
    return dict(zip(ids, vectors, strict=True))


def assert_matches(table, ids: list[str], expected: np.ndarray, atol: float = 1e-5) -> None:
    """The output holds exactly ``ids``, each once, with ``expected`` vectors (max |d| <= atol)."""
    found = vectors_by_id(table)
    assert sorted(found) == sorted(ids)
    got = np.stack([found[i] for i in ids]).astype(np.float32)
    worst = float(np.max(np.abs(got - expected.astype(np.float32))))
    assert worst <= atol, f"max |delta| {worst} over {atol}"
