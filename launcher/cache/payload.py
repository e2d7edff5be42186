"""The embedded payload, decoding in a thread from the moment a cold start holds the
version's publish lock.

Decoding the rootfs.tar.zst is the longest step of a cold start. It starts before the
unpacking code is imported: importing that code, writing the launcher's code cache and
setting up the work dir then overlap with it. The stored bytes are hashed as they pass
(the manifest's digest covers them), decoded by the zstd module published into the
cache (launcher.cache.zstd), and handed over a bounded number of chunks ahead
(launcher.cache.readahead). Only the cold path imports this module.
"""

from __future__ import annotations

from launcher import embedded
from launcher.cache import zstd
from launcher.cache.readahead import ReadAhead
from launcher.manifest import window_bytes
from launcher.progress import Progress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

    from launcher.cache.paths import Layout


class HashingReader:
    """Reads a stream forward, hashing and counting every byte that passes."""

    def __init__(self, raw: IO[bytes], progress: Progress) -> None:
        import hashlib

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

    def matches(self, digest: str) -> bool:
        """Whether the bytes read so far hash to `digest` ('sha256:<hex>')."""
        return "sha256:" + self.sha.hexdigest() == digest


class Decoding:
    """The payload of `manifest` being decoded: `chunks()` hands out the tar stream,
    `hashing` the stored bytes read so far. The decoder (and the zstd module it needs)
    is set up in the thread; its errors arrive from `chunks()`. Close it when done."""

    def __init__(self, layout: Layout, manifest: dict[str, Any], quiet: bool) -> None:
        label = f"auto-review: unpacking {manifest.get('version', '?')}"
        self.progress = Progress(label, int(manifest["compressed_size"]), enabled=not quiet)
        self.raw = embedded.open_payload()
        self.hashing = HashingReader(self.raw, self.progress)
        window = window_bytes(manifest)
        try:
            self.chunks = ReadAhead(lambda: zstd.open_reader(self.hashing, layout, window))
        except BaseException:
            self.raw.close()
            raise

    def close(self) -> None:
        """Stop the thread (after the read it is in) and close the stored stream."""
        try:
            self.chunks.close()
        finally:
            self.raw.close()

    def __enter__(self) -> Decoding:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
