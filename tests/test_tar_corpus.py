"""Other projects' tar test suites as payloads of the real single file: the 110 archives in
``../shared/corpus/tar/`` (libarchive's, Go's ``archive/tar``'s and CPython's own test
data; ``SOURCES.tsv`` says where each comes from). Each is refused with exit 65 and one
line, or unpacks to exactly what Python's ``tarfile`` reads of it, modes made safe; no
run peaks over 64 MB.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard
from conftest import ROOT, rewrite_app, run_app_measured

CORPUS = ROOT.parent / "shared" / "corpus" / "tar"
ARCHIVES = sorted(CORPUS.rglob("*.tar"))
MAX_RSS_MB = 64
# What tarfile reads as a member the cache may hold; anything else must be refused.
KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
}


def test_the_corpus_is_all_there() -> None:
    """A missing corpus fails: a test skipped for lack of its data is not a pass."""
    rows = [line.split("\t") for line in (CORPUS / "SOURCES.tsv").read_text().splitlines()[1:]]
    listed = [row[4] for row in rows if len(row) > 4 and row[4] != "-"]  # "-": not kept
    assert len(listed) == len(ARCHIVES) == 110
    for name in listed:
        assert (CORPUS / name).is_file(), name


def as_payload(app: Path, archive: Path, out: Path) -> Path:
    """The single file with `archive` as its payload; the manifest's digest and sizes
    follow, its caps leave room, and no build file list vouches for the entries."""
    payload = zstandard.ZstdCompressor(level=3).compress(archive.read_bytes())

    def edit(manifest: dict) -> None:
        manifest.update(
            digest="sha256:" + hashlib.sha256(payload).hexdigest(),
            compressed_size=len(payload),
            file_count=10_000,
            largest_file=64 << 20,
            unpacked_size=64 << 20,
        )
        manifest.pop("files_digest", None)

    return rewrite_app(app, out, payload=payload, edit_manifest=edit)


def run_measured(app: Path, cache: Path) -> tuple[int, str, float]:
    """`cache prepare` of `app`: (exit code, stderr, the launcher's peak RSS in MB)."""
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache))
    return run_app_measured(app, "-q", "cache", "prepare", env=env, timeout=120)


def normalized(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts)


def tarfile_view(archive: Path) -> dict[str, tuple[str, int, bytes | str]] | None:
    """What tarfile reads: path -> (kind, safe mode, content or link target); None when
    tarfile cannot read the archive."""
    view: dict[str, tuple[str, int, bytes | str]] = {}
    try:
        with tarfile.open(archive) as tf:
            for member in tf:
                path = normalized(member.name)
                kind = KINDS.get(member.type)
                if not path or kind is None:
                    continue  # the root itself; kinds the cache refuses are checked apart
                if kind == "file":
                    fh = tf.extractfile(member)
                    data = fh.read() if fh else b""
                    view[path] = ("file", (member.mode & 0o755) | 0o400, data)
                elif kind == "dir":
                    view[path] = ("dir", 0, b"")
                elif kind == "symlink":
                    view[path] = ("symlink", 0, member.linkname)
                else:
                    target = view.get(normalized(member.linkname))
                    view[path] = ("file", target[1] if target else 0, target[2] if target else b"")
    except (tarfile.TarError, OSError, ValueError, UnicodeError, EOFError):
        return None
    return view


def unpacked_view(rootfs: Path) -> dict[str, tuple[str, int, bytes | str]]:
    view: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(rootfs).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                view[rel] = ("symlink", 0, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                view[rel] = ("dir", 0, b"")
            else:
                view[rel] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return view


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_an_archive_is_refused_in_one_line_or_unpacked_exactly(
    app: Path, archive: Path, tmp_path: Path
) -> None:
    single = as_payload(app, archive, tmp_path / "auto-review")
    cache = tmp_path / "cache"
    code, stderr, rss = run_measured(single, cache)
    assert rss <= MAX_RSS_MB, f"peak RSS {rss:.0f} MB"
    assert "Traceback" not in stderr
    if code == 65:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("auto-review: "), stderr
        bundles = cache / "v1" / "bundles"
        assert not [p for p in bundles.iterdir() if p.name.startswith("sha256-") and p.is_dir()]
        return
    assert code == 0, stderr
    expected = tarfile_view(archive)
    assert expected is not None, "unpacked an archive tarfile cannot read"
    [rootfs] = (cache / "v1" / "bundles").glob("sha256-*/rootfs")
    got = unpacked_view(rootfs)
    implicit = {p for p, v in got.items() if v[0] == "dir"} - set(expected)
    assert {p: v for p, v in got.items() if p not in implicit} == {
        p: v for p, v in expected.items() if v[0] != "dir" or p in got
    }
    assert set(expected) <= set(got)


def plain_posix(archive: Path) -> bool:
    """An archive no tar reader can read two ways: POSIX headers only, plain files and
    directories with relative, distinct names and no special mode bits, and the
    end-of-archive marker after the last member."""
    data = archive.read_bytes()
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
    except (tarfile.TarError, OSError, ValueError, UnicodeError, EOFError):
        return False
    names = [normalized(m.name) for m in members]
    if not members or len(set(names)) != len(names):
        return False
    for member, name in zip(members, names, strict=True):
        header = data[member.offset : member.offset + 512]
        if header[257:263] != b"ustar\x00" or member.mode & 0o7000:
            return False
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
            return False
        if not name or ".." in name.split("/") or member.name.startswith("/"):
            return False
    last = members[-1]
    end = last.offset_data + -(-last.size // 512) * 512
    return data[end : end + 1024] == bytes(1024)


def test_the_corpus_has_both_outcomes(app: Path, tmp_path: Path) -> None:
    """The suite above cannot pass by refusing everything: of the archives no reader can
    read two ways, most unpack (the rest go over a cap, or hold a kind the cache refuses:
    sparse files, a NUL in a path)."""
    plain = [archive for archive in ARCHIVES if plain_posix(archive)]
    unpacked, refused = [], []
    for i, archive in enumerate(plain):
        code, stderr, _rss = run_measured(
            as_payload(app, archive, tmp_path / f"a{i}"), tmp_path / f"c{i}"
        )
        (unpacked if code == 0 else refused).append((archive.name, stderr.strip()[:160]))
    assert len(plain) >= 20
    assert len(unpacked) >= 2 * len(refused), refused
