"""The server's feature arithmetic (server/features.py) that needs no model."""

from __future__ import annotations

import numpy as np
from bertserve.server.features import from_bfloat16_bits, to_bfloat16_bits


def test_bfloat16_rounds_to_nearest_and_keeps_specials():
    values = np.array(
        [1.0, -2.5, 3.14159265, 1e-30, np.inf, -np.inf, 65504.0, 1 + 2**-8 + 2**-10], np.float32
    )
    back = from_bfloat16_bits(to_bfloat16_bits(values))
    np.testing.assert_allclose(back[np.isfinite(values)], values[np.isfinite(values)], rtol=2**-8)
    assert back[4] == np.inf and back[5] == -np.inf
    assert back[7] == np.float32(1 + 2**-7)  # rounded up, not truncated
    assert np.isnan(from_bfloat16_bits(to_bfloat16_bits(np.array([np.nan], np.float32))))[0]
