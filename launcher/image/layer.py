"""The image's one layer: the embedded payload decompressed and checked against the
manifest (digest of the .tar.zst, diff_id of the tar), as a gzip blob with a fixed
header and level, or as the embedded .tar.zst itself.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

from launcher import embedded
from launcher.errors import PayloadCorrupt

MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
CHUNK = 1 << 20
GZIP_LEVEL = 6


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def stream_tar(m: dict[str, Any], sink: Callable[[bytes], object]) -> None:
    """Decompress the embedded payload into `sink`, asserting the manifest's diff_id."""
    from launcher.cache import zstd
    from launcher.cache.paths import open_layout

    raw = embedded.open_payload()
    digest_raw = hashlib.sha256()
    diff = hashlib.sha256()
    size = 0

    class _Tee:
        """Hash the compressed bytes as the decoder reads them."""

        def read(self, n: int = -1) -> bytes:
            data = raw.read(n)
            digest_raw.update(data)
            return data

        def readinto(self, buf: Any) -> int:
            data = self.read(len(buf))
            buf[: len(data)] = data
            return len(data)

        def readable(self) -> bool:
            return True

    reader = zstd.open_reader(_Tee(), open_layout())  # type: ignore[arg-type]
    try:
        while True:
            chunk = reader.read(CHUNK)
            if not chunk:
                break
            diff.update(chunk)
            size += len(chunk)
            sink(chunk)
        while data := raw.read(CHUNK):  # the decoder may stop at the frame's end
            digest_raw.update(data)
    except zstd.decompression_errors() as exc:
        raise PayloadCorrupt(f"the embedded payload does not decompress: {exc}") from None
    finally:
        raw.close()
    if "sha256:" + diff.hexdigest() != m["diff_id"] or size != m["tar_size"]:
        raise PayloadCorrupt(
            "the embedded rootfs does not match the manifest's diff_id", embedded.REBUILD
        )
    if "sha256:" + digest_raw.hexdigest() != m["digest"]:
        raise PayloadCorrupt(
            "the embedded payload does not match the manifest's digest", embedded.REBUILD
        )


def layer_gzip(m: dict[str, Any], blobs: str) -> dict[str, Any]:
    """gzip(tar) with a fixed header (mtime 0, no name) and level: streamed and hashed."""
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".layer-")
    try:
        with os.fdopen(fd, "wb") as fh:
            hw = _HashingWriter(fh)
            gz = gzip.GzipFile(
                filename="", mode="wb", fileobj=hw, compresslevel=GZIP_LEVEL, mtime=0
            )
            stream_tar(m, gz.write)
            gz.close()
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, os.path.join(blobs, hw.sha.hexdigest()))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return {"mediaType": MT_LAYER_GZIP, "digest": f"sha256:{hw.sha.hexdigest()}", "size": hw.size}


def layer_zstd(m: dict[str, Any], blobs: str) -> dict[str, Any]:
    """The embedded .tar.zst as-is (its digest is the manifest's digest); diff_id checked."""
    stream_tar(m, lambda _chunk: None)  # verifies digest and diff_id before we publish
    hexd = m["digest"].split(":", 1)[1]
    raw = embedded.open_payload()
    try:
        with open(os.path.join(blobs, hexd), "wb") as fh:
            while chunk := raw.read(CHUNK):
                fh.write(chunk)
    finally:
        raw.close()
    return {"mediaType": MT_LAYER_ZSTD, "digest": m["digest"], "size": m["compressed_size"]}
