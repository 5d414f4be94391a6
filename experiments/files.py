"""The files an FTP workload serves: seeded content, fixed or heavy-tailed sizes. Pure."""
from __future__ import annotations

import hashlib
import os
import random

SIZE_DISTS = ("fixed", "pareto")
PARETO_SHAPE = 1.2  # heavy-tailed like Internet flow sizes: most small, most bytes in few
PARETO_CAP = 32  # no file larger than this many times the mean


def file_sizes(count: int, mean: int, dist: str, seed: int) -> list[int]:
    """``count`` seeded file sizes: all ``mean`` (fixed) or Pareto with that mean, capped."""
    if dist == "fixed":
        return [mean] * count
    if dist != "pareto":
        raise ValueError(f"size distribution {dist!r} unknown (use {', '.join(SIZE_DISTS)})")
    rnd = random.Random(seed ^ 0x5EED)
    scale = mean * (PARETO_SHAPE - 1) / PARETO_SHAPE
    return [max(1, min(mean * PARETO_CAP, int(scale / (1.0 - rnd.random()) ** (1 / PARETO_SHAPE))))
            for _ in range(count)]


def make_files(root: str, count: int, size: int, seed: int, dist: str = "fixed") -> dict[str, str]:
    """Write ``count`` files of seeded random bytes (sizes by ``dist``); return name -> SHA-256."""
    os.makedirs(root, exist_ok=True)
    rnd = random.Random(seed)
    sums = {}
    for i, size in enumerate(file_sizes(count, size, dist, seed)):
        name = f"file{i}.bin"
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
