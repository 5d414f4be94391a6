"""The files an FTP workload serves: seeded content, fixed or heavy-tailed sizes. Pure."""
from __future__ import annotations

import hashlib
import os
import random

SIZE_DISTS = ("fixed", "mice_elephants")
# Mice and elephants, the shape of Internet traffic: most connections are short,
# most bytes travel in a few long ones. A tenth of the files (at least one) is an
# elephant ELEPHANT_FACTOR times the size of the others.
ELEPHANT_SHARE = 0.1
ELEPHANT_FACTOR = 512


def file_sizes(count: int, size: int, dist: str) -> list[int]:
    """The sizes of ``count`` files: all ``size`` (fixed), or mice of ``size`` and
    elephants of ``size * ELEPHANT_FACTOR`` (mice_elephants; the elephants last)."""
    if dist == "fixed":
        return [size] * count
    if dist != "mice_elephants":
        raise ValueError(f"size distribution {dist!r} unknown (use {', '.join(SIZE_DISTS)})")
    elephants = max(1, round(count * ELEPHANT_SHARE))
    return [size] * (count - elephants) + [size * ELEPHANT_FACTOR] * elephants


def make_files(root: str, count: int, size: int, seed: int, dist: str = "fixed") -> dict[str, str]:
    """Write ``count`` files of seeded random bytes (sizes by ``dist``); return name -> SHA-256."""
    sizes = {f"file{i}.bin": n for i, n in enumerate(file_sizes(count, size, dist))}
    return write_files(root, sizes, seed)


def write_files(root: str, sizes: dict[str, int], seed: int) -> dict[str, str]:
    """Write each named file of its size in seeded random bytes; return name -> SHA-256."""
    os.makedirs(root, exist_ok=True)
    rnd = random.Random(seed)
    sums = {}
    for name, size in sizes.items():
        digest = hashlib.sha256()
        with open(os.path.join(root, name), "wb") as fh:
            left = size
            while left:  # in chunks: files may be larger than memory should hold
                data = rnd.randbytes(min(left, 16 << 20))
                fh.write(data)
                digest.update(data)
                left -= len(data)
        sums[name] = digest.hexdigest()
    return sums
