"""Per-key seeded random generators: one independent, reproducible stream per (seed, key).

A query, a sequence or a map gets the same random numbers whatever the run order, the number of workers or an
interruption and resumption, because its generator depends only on the run's seed and its own name.
"""
from __future__ import annotations

import zlib

import numpy as np


def keyed_rng(seed: int, key: str) -> np.random.Generator:
    """``np.random.default_rng([seed, crc32(key)])``: the generator of one named item (query, sequence, map).

    Args:
        seed: the run's base seed (a non-negative integer).
        key: the item's name (UTF-8 encoded for the CRC-32).
    """
    return np.random.default_rng([int(seed), zlib.crc32(key.encode())])
