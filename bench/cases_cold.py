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


def cold_rows(app: Path, rounds: int, base: Path) -> list[Row]:
    work = base / "cold"
    work.mkdir()
    cache = work / "cache"
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache))
    payload = work / "rootfs.tar.zst"
    with zipfile.ZipFile(app) as zf:
        payload.write_bytes(zf.read("bundle/rootfs.tar.zst"))
    target = work / "tar-x"

    def reset() -> None:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()

    ours = timed(lambda: run([*APP_PYTHON, str(app), "-q", "cache", "prepare"], env), rounds, reset)
    shell = f"zstd -dc {payload} | tar -x -C {target}"
    ref = timed(lambda: run(["sh", "-c", shell]), rounds, reset)
    reset()
    rss = peak_rss_mb([*APP_PYTHON, str(app), "-q", "cache", "prepare"], env)
    reset()
    rss_ref = peak_rss_mb(["sh", "-c", shell], env)
    reset()
    procs_time = []
    extractions = 0
    for _ in range(max(1, rounds // 3)):
        reset()
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
    cache, target = work / "cache", work / "tar-x"
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache))
    payload = work / "rootfs.tar.zst"
    with zipfile.ZipFile(app) as zf:
        payload.write_bytes(zf.read("bundle/rootfs.tar.zst"))

    def reset() -> None:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()

    shell = f"zstd -dc {payload} | tar -x -C {target} && sync -f {target}"
    ours, ref = [], []
    for _ in range(rounds):  # interleaved: a busy neighbour slows both alike
        ours += timed(lambda: run([*APP_PYTHON, str(app), "-q", "cache", "prepare"], env), 1, reset)
        ref += timed(lambda: run(["sh", "-c", shell]), 1, reset)
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
