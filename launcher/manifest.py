"""The manifest: the contract between build.py and the launcher, in one place.

build.py writes it (bundle/bundle.json, and launcher/_embedded.py as a Python
literal the warm path reads without json); the launcher reads it through
`validate` (the embedded copy on every start, a cached version's bundle.json before
trusting it); the OCI image config and `bundle info` derive from it. Standard
library only, and nothing heavy: no re, json or typing at run time.
"""

from __future__ import annotations

from launcher.errors import PayloadCorrupt

SCHEMA = 1
HEX = frozenset("0123456789abcdef")
MAX_WINDOW_LOG = 27  # zstd allows 31; a rootfs never needs over 128 MiB of window
# What a manifest may promise at most. The rootfs has some 360 files; an unpack keeps a
# record of every member, so the member cap is also what bounds its memory (20,000
# members stay far under the 64 MB any unpack may take).
MAX_FILE_COUNT = 20_000
MAX_UNPACKED_SIZE = 8 << 30
REBUILD = "download auto-review again (or rebuild it with: python3 build.py)"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypedDict

    class User(TypedDict):
        name: str
        uid: int
        gid: int

    class Process(TypedDict):
        args: list[str]
        env: list[str]
        cwd: str
        user: User

    class Zstd(TypedDict):
        level: int
        window_log: int

    class Manifest(TypedDict, total=False):
        schema: int
        name: str
        version: str
        digest: str  # sha256 of rootfs.tar.zst, as stored in the single file
        diff_id: str  # sha256 of the uncompressed tar: the OCI layer id
        files_digest: str  # sha256 of bundle/files.tsv (per-file digests from the build)
        compressed_size: int
        tar_size: int
        unpacked_size: int
        file_count: int
        largest_file: int
        arch: str
        created: str  # SOURCE_DATE_EPOCH as RFC 3339
        zstd: Zstd
        process: Process
        mounts: list[dict[str, Any]]


# field -> (type, required); nested dicts are checked by their own tables below
FIELDS: dict[str, tuple[type, bool]] = {
    "schema": (int, True),
    "name": (str, True),
    "version": (str, True),
    "digest": (str, True),
    "diff_id": (str, True),
    "files_digest": (str, False),
    "compressed_size": (int, True),
    "tar_size": (int, True),
    "unpacked_size": (int, True),
    "file_count": (int, True),
    "largest_file": (int, True),
    "arch": (str, True),
    "created": (str, True),
    "zstd": (dict, True),
    "process": (dict, True),
    "mounts": (list, True),
}
PROCESS_FIELDS: dict[str, tuple[type, bool]] = {
    "args": (list, True),
    "env": (list, True),
    "cwd": (str, True),
    "user": (dict, True),
}
USER_FIELDS: dict[str, tuple[type, bool]] = {
    "name": (str, True),
    "uid": (int, True),
    "gid": (int, True),
}
ZSTD_FIELDS: dict[str, tuple[type, bool]] = {"level": (int, True), "window_log": (int, True)}
DIGESTS = ("digest", "diff_id", "files_digest")
SIZES = ("compressed_size", "tar_size", "unpacked_size", "file_count", "largest_file")


class ManifestError(PayloadCorrupt):
    """A manifest that breaks the contract (damaged file, or another build's format)."""


def is_digest(value: object) -> bool:
    """'sha256:' followed by 64 lower-case hex digits."""
    return (
        isinstance(value, str)
        and len(value) == 71
        and value.startswith("sha256:")
        and HEX.issuperset(value[7:])
    )


def _check_table(data: object, table: dict[str, tuple[type, bool]], where: str) -> None:
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {where} is not an object", REBUILD)
    for key, (kind, required) in table.items():
        if key not in data:
            if required:
                raise ManifestError(f"manifest has no {where}{key}", REBUILD)
            continue
        value = data[key]
        # bool is an int in Python; no field of ours is a bool
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ManifestError(f"manifest {where}{key} is not a {kind.__name__}", REBUILD)


def validate(data: object) -> Manifest:
    """`data` as a Manifest if it keeps the contract, else ManifestError (exit 65)."""
    _check_table(data, FIELDS, "")
    assert isinstance(data, dict)
    if data["schema"] != SCHEMA:
        raise ManifestError(
            f"manifest schema {data['schema']} is not {SCHEMA}: another auto-review's format",
            "run it with the auto-review that wrote it",
        )
    for key in DIGESTS:
        if key in data and not is_digest(data[key]):
            raise ManifestError(f"manifest {key} is not a sha256 digest", REBUILD)
    for key in SIZES:
        if data[key] < 0:
            raise ManifestError(f"manifest {key} is negative", REBUILD)
    for key, cap in (("file_count", MAX_FILE_COUNT), ("unpacked_size", MAX_UNPACKED_SIZE),
                     ("largest_file", MAX_UNPACKED_SIZE)):  # fmt: skip
        if data[key] > cap:
            raise ManifestError(f"manifest {key} {data[key]} is over the cap of {cap}", REBUILD)
    _check_table(data["process"], PROCESS_FIELDS, "process.")
    _check_table(data["process"]["user"], USER_FIELDS, "process.user.")
    user = data["process"]["user"]
    if user["uid"] < 1 or user["gid"] < 1:  # the sandbox never runs its process as root
        raise ManifestError("manifest process.user.uid/gid must not be 0 (root)", REBUILD)
    _check_table(data["zstd"], ZSTD_FIELDS, "zstd.")
    if not 10 <= data["zstd"]["window_log"] <= MAX_WINDOW_LOG:
        raise ManifestError("manifest zstd.window_log is out of range", REBUILD)
    for key in ("args", "env"):
        if not all(isinstance(x, str) for x in data["process"][key]):
            raise ManifestError(f"manifest process.{key} holds a non-string", REBUILD)
    if not data["process"]["args"]:
        raise ManifestError("manifest process.args is empty", REBUILD)
    if not all(isinstance(m, dict) and isinstance(m.get("destination"), str)
               and isinstance(m.get("type"), str) for m in data["mounts"]):  # fmt: skip
        raise ManifestError("manifest mounts must be objects with a destination and a type",
                            REBUILD)  # fmt: skip
    return data  # type: ignore[return-value]


def window_bytes(manifest: Manifest) -> int:
    """The zstd window the payload was compressed with: the decoder's cap."""
    return 1 << manifest["zstd"]["window_log"]
