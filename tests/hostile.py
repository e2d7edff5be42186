"""Files an attacker (or a slip) puts where a PEM file is expected: reads of them must
be bounded, never hang, and end in one line."""

from __future__ import annotations

import os
from pathlib import Path


def fifo_and_oversized(tmp_path: Path, head: bytes, size: int) -> tuple[Path, Path]:
    """A FIFO nobody writes to (a blocking open would wait forever) and a sparse file of
    `size` bytes that starts like the real thing."""
    fifo = tmp_path / "hostile.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "hostile-big.pem"
    with open(big, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return fifo, big
