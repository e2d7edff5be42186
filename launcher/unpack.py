"""The cold path: publish the embedded bundle into the cache, exactly once, crash-safe.

Protocol (DESIGN.md "The cache"): take the version's extract lock, check again,
remove stale work dirs, check free space, stream zip -> sha256 -> zstd -> our
extractor into `.tmp-*`, compare the digest, sync, write the marker, rename
into place without replacing, sync the parent. A crash at any point leaves
either nothing or a complete version: readers only trust the marker, and the
marker is written inside the work dir before the rename that publishes it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from typing import IO, Any

from launcher import embedded, locks, zstd_backend
from launcher.cache.extract import Entry, Limits, extract_tar_stream
from launcher.cache.tree import remove_tree
from launcher.errors import CacheUnusable, NoSpace, PayloadCorrupt
from launcher.layout import MARKER, Layout, make_private_dir
from launcher.progress import Progress

HARD_MAX_MEMBERS = 200_000
HARD_MAX_TOTAL = 8 << 30
SPACE_MARGIN = 16 << 20
FILES_LIST = "files.tsv"


class HashingReader:
    """Reads a stream forward, hashing and counting every byte that passes."""

    def __init__(self, raw: IO[bytes], progress: Progress) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.progress(len(data))
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read to the end, so the digest covers every stored byte."""
        while self.read(1 << 20):
            pass


def limits_for(manifest: dict[str, Any]) -> Limits:
    """Extraction caps from the manifest, bounded by absolute caps."""
    return Limits(
        max_members=min(int(manifest["file_count"]), HARD_MAX_MEMBERS),
        max_file_size=min(int(manifest["largest_file"]), HARD_MAX_TOTAL),
        max_total_size=min(int(manifest["unpacked_size"]), HARD_MAX_TOTAL),
    )


def ensure_unpacked(layout: Layout, manifest: dict[str, Any], quiet: bool = False) -> bool:
    """Make sure the embedded bundle is published in the cache. True if we extracted it."""
    digest = manifest["digest"]
    make_private_dir(layout.bundles, "cache directory")
    lock_fd = locks.lock(layout.extract_lock(digest))
    try:
        if os.path.exists(layout.marker(digest)):
            return False
        remove_stale_work(layout, digest)
        publish(layout, manifest, quiet)
    finally:
        os.close(lock_fd)
    return True


def remove_stale_work(layout: Layout, digest: str) -> None:
    """Delete work dirs of this version left by a killed extraction (we hold its lock)."""
    prefix = f".tmp-{layout.dirname(digest)}-"
    for name in os.listdir(layout.bundles):
        if name.startswith(prefix):
            remove_tree(os.path.join(layout.bundles, name), ignore_errors=True)
    final = layout.version_dir(digest)
    if os.path.lexists(final):  # a version dir without its marker was never published
        trash = os.path.join(layout.bundles, f".trash-{layout.dirname(digest)}-{os.getpid()}")
        os.rename(final, trash)
        remove_tree(trash, ignore_errors=True)


def check_free_space(path: str, needed: int) -> None:
    """Refuse early when the filesystem cannot hold the unpacked tree."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if free < needed + SPACE_MARGIN:
        raise NoSpace(
            f"not enough space to unpack in {path}: need {(needed + SPACE_MARGIN) >> 20} MiB,"
            f" {free >> 20} MiB free",
            "free some space or set AUTO_REVIEW_CACHE_DIR to a larger disk",
        )


def publish(layout: Layout, manifest: dict[str, Any], quiet: bool) -> None:
    """Extract into a work dir and rename it into place; on any error remove the work dir."""
    digest = manifest["digest"]
    check_free_space(layout.bundles, int(manifest["unpacked_size"]))
    work = tempfile.mkdtemp(prefix=f".tmp-{layout.dirname(digest)}-", dir=layout.bundles)
    try:
        entries = extract_verified(layout, manifest, work, quiet)
        write_metadata(work, manifest, entries)
        sync_tree(work)
        write_marker(work)
        rename_no_replace(work, layout.version_dir(digest))
        fsync_dir(layout.bundles)
    except OSError as exc:
        remove_tree(work, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace(
                f"no space left while unpacking into {layout.bundles}",
                "free some space or set AUTO_REVIEW_CACHE_DIR to a larger disk",
            ) from None
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise CacheUnusable(
                f"cannot write the cache {layout.bundles}: {exc.strerror}",
                "set AUTO_REVIEW_CACHE_DIR to a writable directory",
            ) from None
        raise
    except BaseException:
        remove_tree(work, ignore_errors=True)
        raise


def extract_verified(
    layout: Layout, manifest: dict[str, Any], work: str, quiet: bool
) -> list[Entry]:
    """Stream the payload into work/rootfs and check its digest; PayloadCorrupt on mismatch."""
    rootfs = os.path.join(work, "rootfs")
    os.mkdir(rootfs, 0o700)
    label = f"auto-review: unpacking {manifest.get('version', '?')}"
    progress = Progress(label, int(manifest["compressed_size"]), enabled=not quiet)
    import zipfile

    with embedded.open_payload() as raw:
        hashing = HashingReader(raw, progress)
        reader = zstd_backend.open_reader(hashing, layout)
        bad = (*zstd_backend.decompression_errors(), zipfile.BadZipFile, EOFError)
        try:
            result = extract_tar_stream(reader, rootfs, limits_for(manifest))
            hashing.drain()
            # The container's "/": traversable by the unprivileged sandbox user.
            os.chmod(rootfs, 0o755)
        except bad as exc:
            raise PayloadCorrupt(
                f"the embedded payload is damaged: {exc}", embedded.REBUILD
            ) from None
        except PayloadCorrupt as exc:
            if hashing.sha.hexdigest() != manifest["digest"].split(":", 1)[1]:
                exc.message += " (and the payload does not match its digest)"
            raise
    progress.finish()
    actual = "sha256:" + hashing.sha.hexdigest()
    if actual != manifest["digest"]:
        raise PayloadCorrupt(
            f"the embedded payload does not match its manifest digest ({actual[:19]}...)",
            embedded.REBUILD,
        )
    return result.entries


def write_metadata(work: str, manifest: dict[str, Any], entries: list[Entry]) -> None:
    """bundle.json (the manifest) and files.tsv (what `cache verify` re-hashes)."""
    with open(os.path.join(work, "bundle.json"), "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
    # surrogateescape: tarfile decodes non-UTF-8 names that way; write them back as bytes
    with open(os.path.join(work, FILES_LIST), "w", errors="surrogateescape") as fh:
        for e in entries:
            fh.write(f"{e.kind}\t{e.mode:o}\t{e.size}\t{e.digest}\t{e.path}\n")


def sync_tree(path: str) -> None:
    """Flush everything written under `path` to disk (one syncfs, not a fsync per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


def write_marker(work: str) -> None:
    fd = os.open(os.path.join(work, MARKER), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(work)


def rename_no_replace(src: str, dst: str) -> None:
    """rename(2) that never replaces: a non-empty target makes it fail."""
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "version already published", dst)
    os.rename(src, dst)  # dst would have to be an empty dir to be replaced: never ours


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
