"""A block embedded in parts (for progress) is joined back in row order (no model)."""

from __future__ import annotations

import numpy as np
from bertserve.dataset.job import _joined


def test_parts_join_in_order_arrays_and_per_text_lists():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 4)).astype(np.float32)
    tokens = [rng.standard_normal((n, 4)) for n in (3, 1, 4, 2, 5)]
    parts = [
        {"sentence_embedding": vectors[:2], "hidden_states.-1": tokens[:2]},
        {"sentence_embedding": vectors[2:4], "hidden_states.-1": tokens[2:4]},
        {"sentence_embedding": vectors[4:], "hidden_states.-1": tokens[4:]},
    ]
    joined = _joined(parts)
    assert np.array_equal(joined["sentence_embedding"], vectors)
    assert [t.shape for t in joined["hidden_states.-1"]] == [t.shape for t in tokens]
    assert all(
        np.array_equal(a, b) for a, b in zip(joined["hidden_states.-1"], tokens, strict=True)
    )
    assert _joined([parts[0]]) is parts[0] and _joined([]) == {}
