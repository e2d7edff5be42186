"""The vendored zstandard package for every CPython ABI, read from one xz blob.

build.py packs the package's files for all ABIs into `_vendor/zstandard.xz` (stored),
one solid xz stream, and lists them in `_vendor/zstandard.json` (offset, size and
sha256 of each file). xz, because the blob carries the zstd decoder: it must be
readable with the standard library alone. Only the cold path imports this module.
"""

from __future__ import annotations

import hashlib
import json

from launcher import embedded
from launcher.errors import PayloadCorrupt, raise_if_out_of_memory

INDEX_MEMBER = "_vendor/zstandard.json"
BLOB_MEMBER = "_vendor/zstandard.xz"
MAX_UNPACKED = 16 << 20  # four ABIs are 3.8 MB; a bigger index is a damaged file
MAX_INDEX = 1 << 20  # 4 KB for four ABIs


_read: list[dict | None] = []  # the index, read once per process (a cold start asks 3 times)


def _index() -> dict | None:
    """The blob's index, or None when this file vendors nothing."""
    if not _read:
        _read.append(_read_index())
    return _read[0]


def _read_index() -> dict | None:
    try:
        raw = embedded.read_member(INDEX_MEMBER, MAX_INDEX)
    except KeyError:
        return None
    try:
        index = json.loads(raw)
        if index.get("format") != 1 or index.get("codec") != "xz":
            raise ValueError(f"unknown format {index.get('format')!r}/{index.get('codec')!r}")
        if not 0 <= index["size"] <= MAX_UNPACKED:
            raise ValueError(f"unpacked size {index['size']} over the cap")
        return index
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PayloadCorrupt(f"{INDEX_MEMBER} is damaged: {exc}", embedded.REBUILD) from None


def blob_tag() -> str:
    """A stable identity of the blob (for the cache directory name): its sha256, shortened."""
    index = _index()
    return index["blob_sha256"][:16] if index else "none"


def has_abi(abi_suffix: str) -> bool:
    """True when the blob holds a C module for this extension suffix (no decompression)."""
    index = _index()
    return bool(index) and any(f["abi"] == abi_suffix for f in index["files"])


def vendor_files(abi_suffix: str) -> list[tuple[str, bytes]] | None:
    """(file name, bytes) of the package for `abi_suffix` (an EXTENSION_SUFFIXES entry,
    e.g. ".cpython-311-x86_64-linux-gnu.so"): `__init__.py` and its C module. None when
    the blob has no module for that ABI. Every byte is checked against the index."""
    index = _index()
    if not index or not any(f["abi"] == abi_suffix for f in index["files"]):
        return None
    try:
        import lzma
    except ImportError as exc:  # a Python built without liblzma
        raise_if_out_of_memory(exc)
        from launcher.errors import RuntimeMissing

        raise RuntimeMissing(
            "this Python has no lzma module to unpack the zstd decoder",
            "run auto-review with a Python built with lzma (every distribution's is)",
        ) from None

    blob = embedded.read_member(BLOB_MEMBER, MAX_UNPACKED)
    if hashlib.sha256(blob).hexdigest() != index["blob_sha256"]:
        raise PayloadCorrupt(f"{BLOB_MEMBER} does not match its index", embedded.REBUILD)
    wanted = [f for f in index["files"] if f["abi"] in ("", abi_suffix)]
    # decode only as far as the last file we need (the blob's sha256 vouches for the rest)
    end = max(f["offset"] + f["size"] for f in wanted)
    if end > index["size"]:
        raise PayloadCorrupt(f"{INDEX_MEMBER} names bytes past the blob", embedded.REBUILD)
    try:
        decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        raw = decoder.decompress(blob, max_length=end)
    except lzma.LZMAError as exc:
        raise PayloadCorrupt(f"{BLOB_MEMBER} is damaged: {exc}", embedded.REBUILD) from None
    if len(raw) != end:
        raise PayloadCorrupt(f"{BLOB_MEMBER} has the wrong size", embedded.REBUILD)
    out = []
    for f in wanted:
        data = raw[f["offset"] : f["offset"] + f["size"]]
        if hashlib.sha256(data).hexdigest() != f["sha256"] or "/" in f["name"]:
            raise PayloadCorrupt(f"{BLOB_MEMBER}: {f['name']!r} is damaged", embedded.REBUILD)
        out.append((f["name"], data))
    return out
