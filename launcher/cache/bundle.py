"""The cold path of a bundle: publish the embedded rootfs into the cache, exactly once.

Through the cache's one publish protocol (launcher.cache.publish): under the
version's extract lock, the stored payload decoding in its thread (launcher.cache.
payload) goes through our extractor into a work dir; the digest of the stored bytes
is compared, bundle.json and files.tsv written, then the marker and the no-replace
rename.
"""

from __future__ import annotations

import json
import os
from typing import Any

from launcher import embedded
from launcher.cache import labels, publish, zstd
from launcher.cache.extract import Entry, Limits, extract_tar_stream
from launcher.cache.paths import Layout, refuse_noexec
from launcher.cache.payload import Decoding
from launcher.errors import PayloadCorrupt
from launcher.manifest import MAX_FILE_COUNT, MAX_UNPACKED_SIZE

FILES_LIST = "files.tsv"
FILES_MEMBER = "bundle/files.tsv"  # the build's list, with every file's sha256
# files.tsv is read whole before the payload and kept while it unpacks, beside the
# decoder: its cap keeps a cold start under 64 MB whatever the file says (the build's
# is 57 KB, 113 bytes a line; 20,000 lines of 419 bytes would still fit). Sized by the
# longest line a path allows (4096 bytes) times MAX_FILE_COUNT, it was 84 MB: a forged
# list of that size took the launcher to 190 MB before it was refused.
MAX_FILES_LIST = 8 << 20


def limits_for(manifest: dict[str, Any]) -> Limits:
    """Extraction caps from the manifest, bounded by absolute caps."""
    return Limits(
        max_members=min(int(manifest["file_count"]), MAX_FILE_COUNT),
        max_file_size=min(int(manifest["largest_file"]), MAX_UNPACKED_SIZE),
        max_total_size=min(int(manifest["unpacked_size"]), MAX_UNPACKED_SIZE),
    )


def ensure_unpacked(
    layout: Layout,
    manifest: dict[str, Any],
    quiet: bool = False,
    lock_held: bool = False,
    decoding: Decoding | None = None,
) -> bool:
    """Make sure the embedded bundle is published in the cache. True if this call did it.
    `lock_held`: the caller holds the version's publish lock (launcher.cache.warm);
    `decoding`: the payload, already decoding since the caller took that lock (else it
    starts once the work dir is ready). The caller closes what it passes."""
    digest = manifest["digest"]
    label = str(manifest.get("version", "?"))

    def fill(work: str) -> None:
        if decoding is not None:
            fill_version(decoding, manifest, work)
            return
        with Decoding(layout, manifest, quiet) as own:
            fill_version(own, manifest, work)

    done = publish.publish(
        layout.version_dir(digest),
        fill,
        waiting_for=f"finish unpacking {label}",
        needed_bytes=int(manifest["unpacked_size"]),
        quiet=quiet,
        lock_held=lock_held,
    )
    labels.record(layout, digest, label)
    return done


def fill_version(decoding: Decoding, manifest: dict[str, Any], work: str) -> None:
    """The publish step for a bundle: rootfs/, bundle.json, files.tsv.

    The per-file digests `cache verify` checks come from the build's files.tsv
    (authenticated by the manifest's files_digest) rather than from hashing every file
    while unpacking (12% of the unpack); what was unpacked must match that list.
    """
    # checked before 48 MB are written, not when runc cannot start the first program
    refuse_noexec(work, "the sandbox's programs cannot run from it")
    listed = build_files_list(manifest)
    entries = extract_verified(decoding, manifest, work, hash_files=listed is None)
    if listed is None:
        write_metadata(work, manifest, entries)
        return
    check_listed(listed, entries)
    write_metadata(work, manifest, [])
    with open(os.path.join(work, FILES_LIST), "wb") as fh:
        fh.write(listed)


def build_files_list(manifest: dict[str, Any]) -> bytes | None:
    """The build's files.tsv, checked against the manifest; None for a build without one."""
    want = manifest.get("files_digest")
    if want is None:
        return None
    import hashlib

    size = int(manifest["compressed_size"])
    data = embedded.read_listed_member(FILES_MEMBER, size, MAX_FILES_LIST)
    if "sha256:" + hashlib.sha256(data).hexdigest() != want:
        raise PayloadCorrupt(f"{FILES_MEMBER} does not match its manifest digest", embedded.REBUILD)
    listed = data.count(b"\n")
    if listed != int(manifest["file_count"]):  # before the payload is read
        raise PayloadCorrupt(
            f"{FILES_MEMBER} lists {listed} files, the manifest {manifest['file_count']}",
            embedded.REBUILD,
        )
    return data


def check_listed(listed: bytes, entries: list[Entry]) -> None:
    """Refuse an unpack whose entries differ from the build's list (kind, mode, size, path,
    link target), so `cache verify` checks exactly what was unpacked."""
    lines = listed.decode("utf-8", "surrogateescape").splitlines()
    if len(lines) != len(entries):
        raise PayloadCorrupt(
            f"the payload has {len(entries)} entries, its file list {len(lines)}", embedded.REBUILD
        )
    for line, e in zip(lines, entries, strict=True):
        got = (e.kind, f"{e.mode:o}", str(e.size), e.path)
        fields = line.split("\t", 4)
        if (
            len(fields) != 5
            or (fields[0], fields[1], fields[2], fields[4]) != got
            or (e.kind == "symlink" and fields[3] != e.digest)
        ):
            raise PayloadCorrupt(
                f"the payload's entry {e.path!r} differs from its file list", embedded.REBUILD
            )


def extract_verified(
    decoding: Decoding, manifest: dict[str, Any], work: str, hash_files: bool = True
) -> list[Entry]:
    """Extract the decoding payload into work/rootfs and check its digest; PayloadCorrupt
    on mismatch."""
    rootfs = os.path.join(work, "rootfs")
    os.mkdir(rootfs, 0o700)
    try:
        result = extract_tar_stream(  # type: ignore[arg-type]
            decoding.chunks,
            rootfs,
            limits_for(manifest),
            hash_files=hash_files,
            written=publish.writeback_starter(),
        )
        # The container's "/": traversable by the unprivileged sandbox user.
        os.chmod(rootfs, 0o755)
    except PayloadCorrupt as exc:
        # Say whether the stored bytes are what the build hashed (the whole payload is
        # hashed, whatever the decoder read): never guess from a prefix.
        if decoding.digest.matches(manifest["digest"]):
            exc.message += " (the payload matches its digest: the build itself is unsafe)"
        else:
            exc.message += " (and the payload does not match its digest)"
        raise
    except (EOFError, *zstd.decompression_errors()) as exc:
        if "Allocation error" in str(exc):  # the window, under a memory limit: not damage
            raise MemoryError from None
        raise PayloadCorrupt(f"the embedded payload is damaged: {exc}", embedded.REBUILD) from None
    decoding.progress.finish()
    if not decoding.digest.matches(manifest["digest"]):
        actual = decoding.digest.hexdigest or "sha256:(the file ends inside it)"
        raise PayloadCorrupt(
            f"the embedded payload does not match its manifest digest ({actual[:19]}...)",
            embedded.REBUILD,
        )
    return result.entries


def write_metadata(work: str, manifest: dict[str, Any], entries: list[Entry]) -> None:
    """bundle.json (the manifest) and files.tsv (what `cache verify` re-hashes)."""
    with open(os.path.join(work, "bundle.json"), "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
    # surrogateescape: non-UTF-8 names are decoded that way; write them back as bytes
    with open(os.path.join(work, FILES_LIST), "w", errors="surrogateescape") as fh:
        for e in entries:
            fh.write(f"{e.kind}\t{e.mode:o}\t{e.size}\t{e.digest}\t{e.path}\n")
