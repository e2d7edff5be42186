"""`bundle export`: the embedded rootfs as an OCI image layout or a docker-archive tar.

The image's only layer is the embedded rootfs, so its diff_id is the manifest's
diff_id: a scan of the image covers the single file and vice versa. Everything is
deterministic (fixed gzip header and level, sorted compact JSON, normalised tar
headers), so two exports are byte-identical. Not on the warm path. The layer itself
(the payload decompressed and checked against the manifest) is launcher.image.layer.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tarfile
from collections.abc import Callable
from typing import IO, Any

from launcher import embedded
from launcher.errors import CacheUnusable, NoSpace, UsageError
from launcher.image.layer import layer_gzip, layer_zstd, stream_tar

MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
STATE_DIR = "/var/lib/auto-review"
DEFAULT_CMD = ("serve",)  # `podman run IMAGE` serves; `podman run IMAGE check` self-tests


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


def _write_blob(blobs: str, data: bytes) -> dict[str, Any]:
    """Store `data` as a blob; return its descriptor (digest, size)."""
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hexd), "wb") as fh:
        fh.write(data)
    return {"digest": f"sha256:{hexd}", "size": len(data)}


def export_oci(target: str, *, zstd: bool = False) -> dict[str, Any]:
    """Write an OCI image layout into `target` (absent or empty); return the manifest ref."""
    _check_target(target, is_dir=True)
    m = embedded.manifest()
    try:
        blobs = os.path.join(target, "blobs", "sha256")
        os.makedirs(blobs, exist_ok=True)
        layer = layer_zstd(m, blobs) if zstd else layer_gzip(m, blobs)
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
                f"{lhex}/layer.tar": (m["tar_size"], lambda: stream_tar(m, out.write)),
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
