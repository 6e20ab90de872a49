"""Named, seeded random streams: init, masks and data order never share a generator.

A stream is identified by the run's seed and a tag (e.g. "mask/fc1"), so adding a layer or a
random draw somewhere never shifts the numbers drawn elsewhere, and a stacked run draws exactly
what it would draw alone.
"""

import hashlib

import torch


def generator(seed: int, *tags: str) -> torch.Generator:
    """A CPU generator seeded from (seed, tags)."""
    key = "/".join([str(seed), *tags]).encode()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1))
    return g
