"""Checking an unpacked version against its files.tsv: every entry's kind, mode, size,
content or link target, walked with directory fds that never follow a symlink."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat

from launcher.cache import tree
from launcher.cache.bundle import FILES_LIST
from launcher.cache.paths import PREPARE_HINT, read_small_file
from launcher.errors import PayloadCorrupt

MAX_LIST = 64 << 20  # a files.tsv of 200,000 members is about 30 MB


@dataclasses.dataclass(frozen=True)
class Expected:
    """One line of files.tsv."""

    kind: str
    mode: int
    size: int
    digest: str


@dataclasses.dataclass
class Verification:
    """What `cache verify` found."""

    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    hashed: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)


def verify_version(version_dir: str, files_digest: str | None = None) -> Verification:
    """Compare the tree under version_dir/rootfs with version_dir/files.tsv, and that list
    with `files_digest` (the manifest's, when the build recorded one)."""
    result = Verification()
    expected = read_files_list(version_dir, result, files_digest)
    ancestors = {p.rsplit("/", i)[0] for p in expected for i in range(1, p.count("/") + 1)}
    seen: set[str] = set()
    digests: dict[tuple[int, int], str] = {}
    for rel, st, parent_fd, name in tree.walk(
        os.path.join(version_dir, "rootfs"), result.problems.append
    ):
        want = expected.get(rel)
        if want is None:
            if not (stat.S_ISDIR(st.st_mode) and rel in ancestors):
                result.problems.append(f"{rel}: not in the file list ({tree.kind_of(st.st_mode)})")
            continue
        seen.add(rel)
        result.counts[want.kind] = result.counts.get(want.kind, 0) + 1
        check_entry(rel, want, st, parent_fd, name, digests, result)
    for rel in sorted(set(expected) - seen):
        result.problems.append(f"{rel}: missing (expected a {expected[rel].kind})")
    return result


def read_files_list(
    version_dir: str, result: Verification, files_digest: str | None = None
) -> dict[str, Expected]:
    """Parse files.tsv (kind, octal mode, size, digest or link target, path per line)."""
    path = os.path.join(version_dir, FILES_LIST)
    data = read_small_file(path, MAX_LIST)
    if data is None:
        raise PayloadCorrupt(
            f"{version_dir} has no {FILES_LIST}: nothing to verify against", PREPARE_HINT
        )
    if files_digest and "sha256:" + hashlib.sha256(data).hexdigest() != files_digest:
        result.problems.append(f"{FILES_LIST} does not match the manifest's files_digest")
    expected = {}
    text = data.decode("utf-8", "surrogateescape")
    for number, line in enumerate(
        text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1
    ):
        fields = line.split("\t", 4)
        try:
            kind, mode, size, digest, rel = fields
            expected[rel] = Expected(kind, int(mode, 8), int(size), digest)
        except ValueError:
            result.problems.append(f"{FILES_LIST} line {number} is malformed")
    return expected


def check_entry(
    rel: str,
    want: Expected,
    st: os.stat_result,
    parent_fd: int,
    name: str,
    digests: dict[tuple[int, int], str],
    result: Verification,
) -> None:
    """Compare one on-disk entry with its files.tsv line."""
    kind = tree.kind_of(st.st_mode)
    expected_kind = "file" if want.kind == "hardlink" else want.kind
    if kind != expected_kind:
        result.problems.append(f"{rel}: is a {kind}, expected a {expected_kind}")
        return
    if kind == "symlink":
        target = os.readlink(name, dir_fd=parent_fd)
        if target != want.digest:
            result.problems.append(f"{rel}: symlink to {target!r}, expected {want.digest!r}")
        return
    if stat.S_IMODE(st.st_mode) != want.mode:
        result.problems.append(f"{rel}: mode {stat.S_IMODE(st.st_mode):o}, expected {want.mode:o}")
    if kind != "file":
        return
    if st.st_size != want.size:
        result.problems.append(f"{rel}: size {st.st_size}, expected {want.size}")
        return
    key = (st.st_dev, st.st_ino)
    if key not in digests:
        digests[key] = tree.hash_at(parent_fd, name)
        result.hashed += st.st_size
    if digests[key] != want.digest:
        result.problems.append(f"{rel}: content differs (sha256 {digests[key][:12]}...)")
