"""Cold unpack vs `zstd -dc | tar -x` (and the same followed by `sync -f`), its peak
RSS, 16 concurrent cold starts vs one, and the sizes vs xz -9 and gzip -9 of the tar.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from functools import partial
from pathlib import Path

from measure import APP_PYTHON, Row, fmt, manifest_of, ratio, run, timed


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> float:
    """Peak RSS of a child command, in MB (ru_maxrss of a fresh wrapper's children)."""
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True,"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL);"
        " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *cmd], env=env, check=True, capture_output=True, text=True
    )
    return int(out.stdout) / 1024


class FreshDirs:
    """A new directory for every cold run, all removed at the end of the case.

    Not removed between runs: ext4 will not hand out an inode freed in the last minute
    or more (recently_deleted() in its allocator) and scans past each one, so creating
    500 files right after deleting 500 took tar 2-4x as long here (perf: find_inode_bit
    -> recently_deleted), a cost of the benchmark's loop, not of a first run.

    Every timed run starts with nothing dirty (os.sync as the untimed setup): the sync
    of a run after a plain `tar -x` would otherwise also write out that tar's 48 MB.
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.made: list[Path] = []

    def _new(self, name: str) -> Path:
        path = self.work / f"{name}-{len(self.made)}"
        self.made.append(path)
        return path

    def cache_env(self) -> dict[str, str]:
        """The environment of a run with an empty cache of its own."""
        return dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(self._new("cache")))

    def target(self) -> Path:
        """An empty directory for `tar -x`."""
        path = self._new("tar-x")
        path.mkdir()
        return path

    def remove(self) -> None:
        for path in self.made:
            shutil.rmtree(path, ignore_errors=True)


def cold_rows(app: Path, rounds: int, base: Path) -> list[Row]:
    work = base / "cold"
    work.mkdir()
    payload = work / "rootfs.tar.zst"
    with zipfile.ZipFile(app) as zf:
        payload.write_bytes(zf.read("bundle/rootfs.tar.zst"))
    fresh = FreshDirs(work)
    ours, ref = [], []
    for _ in range(rounds):  # interleaved: a busy neighbour slows both alike
        ours += timed(partial(run, [*APP_PYTHON, str(app), "-q", "cache", "prepare"],
                              fresh.cache_env()), 1, os.sync)  # fmt: skip
        shell = f"zstd -dc {payload} | tar -x -C {fresh.target()}"
        ref += timed(partial(run, ["sh", "-c", shell]), 1, os.sync)
    rss = peak_rss_mb([*APP_PYTHON, str(app), "-q", "cache", "prepare"], fresh.cache_env())
    rss_ref = peak_rss_mb(
        ["sh", "-c", f"zstd -dc {payload} | tar -x -C {fresh.target()}"], dict(os.environ)
    )
    procs_time = []
    extractions = 0
    for _ in range(max(1, rounds // 3)):
        env = fresh.cache_env()
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [*APP_PYTHON, str(app), "cache", "prepare"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(16)
        ]
        errs = [p.communicate()[1] for p in procs]
        procs_time.append(time.perf_counter() - started)
        extractions = sum("unpacked" in e for e in errs)
    fresh.remove()
    return [
        (
            "cold unpack (cache emptied each round)",
            fmt(ours),
            f"`zstd -dc | tar -x`: {fmt(ref)}",
            ratio(ours, ref),
            "<= 1.3x",
        ),
        (
            "cold unpack peak RSS",
            f"{rss:.1f} MB",
            f"`zstd -dc | tar -x`: {rss_ref:.1f} MB",
            f"{rss / rss_ref:.2f}x",
            "<= 64 MB",
        ),
        (
            "16 concurrent cold starts",
            fmt(procs_time),
            f"one cold start: {fmt(ours)}",
            ratio(procs_time, ours),
            f"extractions: {extractions} (must be 1)",
        ),
    ]


def cold_synced_row(app: Path, rounds: int, base: Path) -> Row:
    """Cold unpack vs `zstd -dc | tar -x && sync -f` of the same bytes: what tar costs when
    it, too, makes the tree durable (the launcher syncs before publishing)."""
    work = base / "cold-synced"
    work.mkdir()
    payload = work / "rootfs.tar.zst"
    with zipfile.ZipFile(app) as zf:
        payload.write_bytes(zf.read("bundle/rootfs.tar.zst"))
    fresh = FreshDirs(work)
    ours, ref = [], []
    for _ in range(rounds):  # interleaved: a busy neighbour slows both alike
        ours += timed(partial(run, [*APP_PYTHON, str(app), "-q", "cache", "prepare"],
                              fresh.cache_env()), 1, os.sync)  # fmt: skip
        target = fresh.target()
        shell = f"zstd -dc {payload} | tar -x -C {target} && sync -f {target}"
        ref += timed(partial(run, ["sh", "-c", shell]), 1, os.sync)
    fresh.remove()
    return (
        "cold unpack vs a synced `tar -x`",
        fmt(ours),
        f"`zstd -dc | tar -x && sync -f`: {fmt(ref)}",
        ratio(ours, ref),
        "<= 1.0x",
    )


def size_rows(app: Path, base: Path) -> list[Row]:
    m = manifest_of(app)
    work = base / "size"
    work.mkdir()
    tar = work / "rootfs.tar"
    with zipfile.ZipFile(app) as zf:
        zst = zf.read("bundle/rootfs.tar.zst")
    import zstandard

    tar.write_bytes(zstandard.ZstdDecompressor().stream_reader(zst).read())
    sizes = {}
    for tool in ("xz", "gzip"):
        out = subprocess.run([tool, "-9", "-c", str(tar)], check=True, capture_output=True).stdout
        sizes[tool] = len(out)
    single = app.stat().st_size
    return [
        (
            "single file",
            f"{single / 1e6:.1f} MB",
            f"xz -9 of the tar: {sizes['xz'] / 1e6:.1f} MB",
            f"{single / sizes['xz']:.2f}x",
            "<= 14 MB (the release issue's)",
        ),
        (
            "payload (zstd)",
            f"{len(zst) / 1e6:.1f} MB",
            f"gzip -9 of the tar: {sizes['gzip'] / 1e6:.1f} MB",
            f"{len(zst) / sizes['gzip']:.2f}x",
            "",
        ),
        ("rootfs", f"{m['unpacked_size'] / 1e6:.1f} MB", f"{m['file_count']} entries", "", ""),
    ]
