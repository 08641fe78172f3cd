"""Random streams of the synthetic dataset: one per purpose and subject, reproducible anywhere."""

from __future__ import annotations

import zlib

import numpy as np


def random_stream(seed: int, *keys: str) -> np.random.Generator:
    """An independent random stream per (seed, purpose, subject...), stable across processes."""
    # crc32, not hash(): str hashes are salted per process, which would break reproducibility.
    return np.random.default_rng([seed, *(zlib.crc32(key.encode()) for key in keys)])
