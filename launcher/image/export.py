"""`bundle export`: the embedded rootfs as an OCI image layout or a docker-archive tar.

The image's only layer is the embedded rootfs, so its diff_id is the manifest's
diff_id: a scan of the image covers the single file and vice versa. Everything is
deterministic (fixed gzip header and level, sorted compact JSON, normalised tar
headers), so two exports are byte-identical. Not on the warm path.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from typing import IO, Any

from launcher import embedded
from launcher.errors import CacheUnusable, NoSpace, PayloadCorrupt, UsageError

MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
STATE_DIR = "/var/lib/auto-review"
DEFAULT_CMD = ("serve",)  # `podman run IMAGE` serves; `podman run IMAGE check` self-tests
CHUNK = 1 << 20
GZIP_LEVEL = 6


def canonical_json(value: Any) -> bytes:
    """Sorted keys, compact separators: the same input always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def image_config(m: dict[str, Any]) -> dict[str, Any]:
    """The OCI image config, derived from the embedded manifest."""
    proc = m["process"]
    env = [
        *proc["env"],
        "AUTO_REVIEW_ISOLATION=bare",  # inside an image the container is the sandbox
        f"AUTO_REVIEW_BUNDLE_DIGEST={m['digest']}",
    ]
    return {
        "architecture": m["arch"],
        "os": "linux",
        "created": m["created"],
        "config": {
            "Entrypoint": list(proc["args"]),
            "Cmd": list(DEFAULT_CMD),
            "Env": env,
            "User": f"{proc['user']['uid']}:{proc['user']['gid']}",
            "WorkingDir": proc["cwd"],
            "Volumes": {STATE_DIR: {}},
            "Labels": {
                "org.opencontainers.image.version": m["version"],
                "io.auto-review.bundle.digest": m["digest"],
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [m["diff_id"]]},
        "history": [{"created": m["created"], "created_by": "auto-review build.py"}],
    }


def export_seccomp(target: str) -> str:
    """The sandbox's seccomp allowlist as a file for `--security-opt seccomp=FILE`.

    The OCI `linux.seccomp` object is also the profile format podman and Docker read
    (defaultAction, defaultErrnoRet, architectures, syscalls with names, action, args).
    """
    from launcher.sandbox import seccomp

    _check_target(target, is_dir=False)
    data = json.dumps(seccomp.profile(), indent=2, sort_keys=True).encode() + b"\n"
    try:
        with open(target, "xb") as fh:
            fh.write(data)
    except OSError as exc:
        raise _io_error(exc, target) from None
    return target


def _io_error(exc: OSError, what: str) -> Exception:
    """Map an OSError while writing to the launcher's error classes."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"no space left writing {what}", "free some space or export elsewhere")
    return CacheUnusable(f"cannot write {what}: {exc.strerror or exc}", "export to a writable path")


def _check_target(path: str, *, is_dir: bool) -> None:
    """Refuse to overwrite: a non-empty directory or an existing file is a usage error."""
    if is_dir:
        if os.path.isdir(path) and os.listdir(path):
            raise UsageError(f"{path} exists and is not empty", "remove it or pick a new directory")
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"{path} exists and is not a directory", "pick a new directory")
    elif os.path.lexists(path):
        raise UsageError(f"{path} already exists", "remove it or pick a new file name")


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


def _stream_tar(m: dict[str, Any], sink: Callable[[bytes], object]) -> None:
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


def _write_blob(blobs: str, data: bytes) -> dict[str, Any]:
    """Store `data` as a blob; return its descriptor (digest, size)."""
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as fh:
        fh.write(data)
    return {"digest": f"sha256:{hexd}", "size": len(data)}


def _layer_gzip(m: dict[str, Any], blobs: str) -> dict[str, Any]:
    """gzip(tar) with a fixed header (mtime 0, no name) and level: streamed and hashed."""
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".layer-")
    try:
        with os.fdopen(fd, "wb") as fh:
            hw = _HashingWriter(fh)
            gz = gzip.GzipFile(
                filename="", mode="wb", fileobj=hw, compresslevel=GZIP_LEVEL, mtime=0
            )
            _stream_tar(m, gz.write)
            gz.close()
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, os.path.join(blobs, hw.sha.hexdigest()))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return {"mediaType": MT_LAYER_GZIP, "digest": f"sha256:{hw.sha.hexdigest()}", "size": hw.size}


def _layer_zstd(m: dict[str, Any], blobs: str) -> dict[str, Any]:
    """The embedded .tar.zst as-is (its digest is the manifest's digest); diff_id checked."""
    _stream_tar(m, lambda _chunk: None)  # verifies digest and diff_id before we publish
    hexd = m["digest"].split(":", 1)[1]
    raw = embedded.open_payload()
    try:
        with open(os.path.join(blobs, hexd), "wb") as fh:
            while chunk := raw.read(CHUNK):
                fh.write(chunk)
    finally:
        raw.close()
    return {"mediaType": MT_LAYER_ZSTD, "digest": m["digest"], "size": m["compressed_size"]}


def export_oci(target: str, *, zstd: bool = False) -> dict[str, Any]:
    """Write an OCI image layout into `target` (absent or empty); return the manifest ref."""
    _check_target(target, is_dir=True)
    m = embedded.manifest()
    try:
        blobs = os.path.join(target, "blobs", "sha256")
        os.makedirs(blobs, exist_ok=True)
        layer = _layer_zstd(m, blobs) if zstd else _layer_gzip(m, blobs)
        config = _write_blob(blobs, canonical_json(image_config(m)))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, **config},
            "layers": [layer],
            "annotations": {"org.opencontainers.image.created": m["created"]},
        }
        desc = _write_blob(blobs, canonical_json(manifest))
        ref = {
            "mediaType": MT_MANIFEST,
            **desc,
            "annotations": {"org.opencontainers.image.ref.name": m["version"]},
        }
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [ref]}
        with open(os.path.join(target, "oci-layout"), "wb") as fh:
            fh.write(canonical_json({"imageLayoutVersion": "1.0.0"}))
        with open(os.path.join(target, "index.json"), "wb") as fh:
            fh.write(canonical_json(index))
    except OSError as exc:
        raise _io_error(exc, target) from None
    return ref


def _tar_header(name: str, size: int) -> bytes:
    """A normalised ustar header: mode 0644, mtime 0, uid/gid 0, no user names."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def _tar_member(out: IO[bytes], name: str, size: int, fill: Callable[[], None]) -> None:
    """Header, the `size` bytes `fill` writes to `out`, then the padding to a block."""
    out.write(_tar_header(name, size))
    fill()
    out.write(b"\0" * ((-size) % tarfile.BLOCKSIZE))


def export_docker_archive(target: str) -> str:
    """Write a docker-archive tar (uncompressed layer, as skopeo's transport needs).

    Written by hand rather than with tarfile so the layer streams straight from
    the decoder; members are sorted, headers normalised, so the file is reproducible.
    """
    _check_target(target, is_dir=False)
    m = embedded.manifest()
    config = canonical_json(image_config(m))
    chex = hashlib.sha256(config).hexdigest()
    lhex = m["diff_id"].split(":", 1)[1]
    index = canonical_json(
        [
            {
                "Config": f"{chex}.json",
                "RepoTags": [f"{m['name']}:{m['version']}"],
                "Layers": [f"{lhex}/layer.tar"],
            }
        ]
    )
    tmp = f"{target}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            members: dict[str, tuple[int, Callable[[], None]]] = {
                f"{chex}.json": (len(config), lambda: out.write(config)),
                f"{lhex}/layer.tar": (m["tar_size"], lambda: _stream_tar(m, out.write)),
                "manifest.json": (len(index), lambda: out.write(index)),
            }
            for name in sorted(members):
                _tar_member(out, name, *members[name])
            out.write(b"\0" * (2 * tarfile.BLOCKSIZE))
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, target)
    except OSError as exc:
        raise _io_error(exc, target) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
