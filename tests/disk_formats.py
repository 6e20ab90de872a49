"""Writers of the real on-disk formats widecli's loaders read, for tests that exercise that code."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, truncate: int = 0) -> None:
    """The IDX format of MNIST: magic (0, 0, dtype=0x08 ubyte, ndim), big-endian dims, raw bytes;
    `truncate` drops that many bytes from the end (a corrupt file)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    body = header + array.astype(np.uint8).tobytes()
    path.write_bytes(body[: len(body) - truncate])
