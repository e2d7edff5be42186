"""Tests of launcher.cache.extract: real files under tmp_path, tar streams built in memory."""

from __future__ import annotations

import hashlib
import io
import os
import random
import resource
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.cache.extract import Entry, ExtractResult, Limits, extract_tar_stream
from launcher.errors import PayloadCorrupt

BIG = Limits(max_members=100_000, max_file_size=1 << 30, max_total_size=1 << 32)


class ForwardOnly:
    """A read-only byte stream without seek, like the output of a zstd decompressor."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._pos + size
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


@dataclass
class M:
    """One member to put into a test tar."""

    name: str
    kind: str = "file"  # file dir symlink hardlink chr blk fifo
    data: bytes = b""
    mode: int = 0o644
    target: str = ""
    pax: dict[str, str] = field(default_factory=dict)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def make_tar(members: list[M]) -> bytes:
    """An uncompressed PAX tar of `members`, in the given order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = _TYPES[m.kind]
            info.mode = m.mode
            info.linkname = m.target
            if m.pax:
                info.pax_headers = dict(m.pax)
            if m.kind in ("chr", "blk"):
                info.devmajor, info.devminor = 1, 3
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def extract(data: bytes, dest: Path, limits: Limits = BIG, **kwargs: object) -> ExtractResult:
    return extract_tar_stream(ForwardOnly(data), str(dest), limits, **kwargs)  # type: ignore[arg-type]


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """lstat and content of everything under root, except the contents and times of skip."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st_ = path.lstat()
            if path == skip:
                out[str(path)] = (stat.S_IFMT(st_.st_mode), 0, 0, b"")
                continue
            content = b""
            if stat.S_ISREG(st_.st_mode):
                content = path.read_bytes()
            elif stat.S_ISLNK(st_.st_mode):
                content = os.readlink(path).encode()
            out[str(path)] = (st_.st_mode, st_.st_size, st_.st_mtime_ns, content)
    return out


@dataclass
class Layout:
    """root/box/dest is the target, root/sentinel a directory symlinks may aim at."""

    root: Path
    box: Path
    dest: Path
    sentinel: Path
    before: dict[str, tuple[int, int, int, bytes]]

    @classmethod
    def make(cls, root: Path) -> Layout:
        box = root / "box"
        dest = box / "dest"
        dest.mkdir(parents=True)
        sentinel = root / "sentinel"
        sentinel.mkdir()
        (sentinel / "keep").write_bytes(b"keep")
        return cls(root, box, dest, sentinel, snapshot(root, dest))

    def assert_nothing_outside(self) -> None:
        assert os.listdir(self.box) == ["dest"]
        assert sorted(os.listdir(self.sentinel)) == ["keep"]
        assert (self.sentinel / "keep").read_bytes() == b"keep"
        assert snapshot(self.root, self.dest) == self.before


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout.make(tmp_path)


def refuse(layout: Layout, members: list[M], limits: Limits = BIG) -> PayloadCorrupt:
    """Extract members, expect PayloadCorrupt, check nothing escaped; return the error."""
    with pytest.raises(PayloadCorrupt) as caught:
        extract(make_tar(members), layout.dest, limits)
    layout.assert_nothing_outside()
    assert "\n" not in caught.value.message
    assert caught.value.fix
    return caught.value


def reason(err: PayloadCorrupt) -> str:
    """The part of a refusal message after the member name."""
    return err.message.split(" in payload: ", 1)[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- a normal tree ---------------------------------------------------------------------


def test_normal_tree(layout: Layout) -> None:
    git = b"#!git\n" * 1000
    big = bytes(range(256)) * 9000  # > 2 MiB: several chunks
    members = [
        M(".", "dir", mode=0o755),
        M("./usr", "dir", mode=0o755),
        M("./usr/bin", "dir", mode=0o755),
        M("./usr/bin/git", data=git, mode=0o755),
        M("./usr/bin/suid", data=b"s", mode=0o4755),
        M("./usr/lib/deep/er/big.bin", data=big, mode=0o644),  # parents implicit
        M("./usr/lib/empty", data=b"", mode=0o600),
        M("./usr/bin/git-hl", "hardlink", target="./usr/bin/git"),
        M("./usr/bin/git-hl2", "hardlink", target="usr/bin/git-hl"),
        M("./lib64", "symlink", target="/usr/lib"),
        M("./usr/bin/g", "symlink", target="git"),
        M("./usr/lib/up", "symlink", target="../../etc/nowhere"),
        M("./tmp", "dir", mode=0o1777),
        M("./ro", "dir", mode=0o555),
        M("./ro/child", data=b"child", mode=0o444),
        M("./sgid", "dir", mode=0o2775),
        M("./etc/.complete", data=b"not reserved below the top", mode=0o644),
    ]
    progress: list[int] = []
    result = extract(make_tar(members), layout.dest, progress=progress.append)
    d = layout.dest

    assert (d / "usr/bin/git").read_bytes() == git
    assert (d / "usr/lib/deep/er/big.bin").read_bytes() == big
    assert (d / "usr/lib/empty").read_bytes() == b""
    assert (d / "ro/child").read_bytes() == b"child"
    assert os.readlink(d / "lib64") == "/usr/lib"
    assert os.readlink(d / "usr/bin/g") == "git"
    assert os.readlink(d / "usr/lib/up") == "../../etc/nowhere"
    assert (d / "usr/bin/git").stat().st_ino == (d / "usr/bin/git-hl").stat().st_ino
    assert (d / "usr/bin/git").stat().st_ino == (d / "usr/bin/git-hl2").stat().st_ino

    assert mode_of(d / "usr/bin/git") == 0o755
    assert mode_of(d / "usr/bin/suid") == 0o755  # setuid dropped
    assert mode_of(d / "usr/lib/deep/er/big.bin") == 0o644
    assert mode_of(d / "usr/lib/empty") == 0o600
    assert mode_of(d / "ro/child") == 0o444
    assert mode_of(d / "tmp") == 0o1777  # sticky dir keeps world-write (the /tmp mount point)
    assert mode_of(d / "ro") == 0o755
    assert mode_of(d / "sgid") == 0o755  # setgid dropped
    assert mode_of(d / "usr/lib") == 0o755  # implicit parent
    assert mode_of(d / "usr/lib/deep/er") == 0o755

    total = len(git) + 1 + len(big) + 5 + len(b"not reserved below the top")
    assert result.total_size == total
    assert sum(progress) == total
    assert result.members == len(members) - 1  # the root "." is skipped
    assert result.entries == [
        Entry("usr", "dir", 0o755, 0, ""),
        Entry("usr/bin", "dir", 0o755, 0, ""),
        Entry("usr/bin/git", "file", 0o755, len(git), sha(git)),
        Entry("usr/bin/suid", "file", 0o755, 1, sha(b"s")),
        Entry("usr/lib/deep/er/big.bin", "file", 0o644, len(big), sha(big)),
        Entry("usr/lib/empty", "file", 0o600, 0, sha(b"")),
        Entry("usr/bin/git-hl", "hardlink", 0o755, len(git), sha(git), link="usr/bin/git"),
        Entry("usr/bin/git-hl2", "hardlink", 0o755, len(git), sha(git), link="usr/bin/git-hl"),
        Entry("lib64", "symlink", 0, 0, "/usr/lib"),
        Entry("usr/bin/g", "symlink", 0, 0, "git"),
        Entry("usr/lib/up", "symlink", 0, 0, "../../etc/nowhere"),
        Entry("tmp", "dir", 0o1777, 0, ""),
        Entry("ro", "dir", 0o755, 0, ""),
        Entry("ro/child", "file", 0o444, 5, sha(b"child")),
        Entry("sgid", "dir", 0o755, 0, ""),
        Entry(
            "etc/.complete",
            "file",
            0o644,
            len(b"not reserved below the top"),
            sha(b"not reserved below the top"),
        ),
    ]
    layout.assert_nothing_outside()


def test_the_written_hook_gets_each_file_open_and_complete(layout: Layout) -> None:
    """`written(fd, size)` (the cold path starts each large file's writeback with it)
    is called once per regular file, with an fd on that very file, all bytes written;
    never for links and dirs."""
    seen: dict[tuple[int, int], tuple[int, bytes]] = {}

    def written(fd: int, size: int) -> None:
        st = os.fstat(fd)
        assert stat.S_ISREG(st.st_mode) and st.st_size == size
        content = Path(os.readlink(f"/proc/self/fd/{fd}")).read_bytes()  # fd is write-only
        seen[(st.st_dev, st.st_ino)] = (size, content)

    big = os.urandom(3 << 20)
    members = [M("a", "dir", mode=0o755), M("a/big", data=big), M("a/small", data=b"x"),
               M("a/empty"), M("a/hl", "hardlink", target="a/big"),
               M("a/sl", "symlink", target="big")]  # fmt: skip
    extract(make_tar(members), layout.dest, written=written)
    files = {"a/big": big, "a/small": b"x", "a/empty": b""}
    expected = {}
    for name, data in files.items():
        st = (layout.dest / name).stat()
        expected[(st.st_dev, st.st_ino)] = (len(data), data)
    assert seen == expected


def test_implicit_dir_then_explicit_dir_takes_its_mode(layout: Layout) -> None:
    extract(make_tar([M("a/b/f", data=b"x"), M("a/b", "dir", mode=0o700)]), layout.dest)
    assert mode_of(layout.dest / "a/b") == 0o700
    assert mode_of(layout.dest / "a") == 0o755


def test_many_dirs_and_deep_paths_leak_no_fds(layout: Layout) -> None:
    members = [M(f"d{i}/f", data=b"x") for i in range(600)]
    members.append(M("/".join(["n"] * 300) + "/leaf", data=b"deep"))
    before = open_fds()
    result = extract(make_tar(members), layout.dest)
    assert open_fds() == before
    assert result.members == 601
    assert (layout.dest / ("n/" * 300) / "leaf").read_bytes() == b"deep"
    assert (layout.dest / "d599/f").read_bytes() == b"x"


def test_fd_cache_is_bounded(layout: Layout) -> None:
    members = [M(f"d{i}/f", data=b"x") for i in range(1000)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 300, hard))
    try:
        result = extract(make_tar(members), layout.dest)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert result.members == 1000


def test_fds_closed_on_error(layout: Layout) -> None:
    members = [M(f"d{i}/f", data=b"x") for i in range(300)] + [M("../x", data=b"x")]
    before = open_fds()
    with pytest.raises(PayloadCorrupt):
        extract(make_tar(members), layout.dest)
    assert open_fds() == before


def test_dest_must_be_empty(layout: Layout) -> None:
    (layout.dest / "old").write_bytes(b"")
    with pytest.raises(ValueError, match="not empty"):
        extract(make_tar([M("a", data=b"x")]), layout.dest)


def test_empty_archive(layout: Layout) -> None:
    result = extract(make_tar([]), layout.dest)
    assert result == ExtractResult(0, 0, [])
    assert os.listdir(layout.dest) == []


# --- refused names ---------------------------------------------------------------------


def test_refuses_absolute_name(layout: Layout) -> None:
    err = refuse(layout, [M(f"{layout.sentinel}/evil", data=b"x")])
    assert reason(err) == "absolute path"
    assert repr(f"{layout.sentinel}/evil") in err.message


def test_refuses_dotdot(layout: Layout) -> None:
    err = refuse(layout, [M("../x", data=b"x")])
    assert "'../x'" in err.message
    assert reason(err) == "path escapes the root"


def test_refuses_dotdot_inside(layout: Layout) -> None:
    err = refuse(layout, [M("a", "dir"), M("a/../../x", data=b"x")])
    assert "'a/../../x'" in err.message


def test_refuses_nul_in_name(layout: Layout) -> None:
    err = refuse(layout, [M("a", data=b"x", pax={"path": "a\x00/../../x"})])
    assert reason(err) == "NUL byte in name"


def test_refuses_double_slash(layout: Layout) -> None:
    refuse(layout, [M("a//b", data=b"x")])


def test_refuses_empty_name(layout: Layout) -> None:
    refuse(layout, [M("", data=b"x")])


def test_refuses_duplicate(layout: Layout) -> None:
    err = refuse(layout, [M("a", data=b"1"), M("./a", data=b"2")])
    assert reason(err) == "duplicate member"
    assert (layout.dest / "a").read_bytes() == b"1"


def test_refuses_duplicate_dir(layout: Layout) -> None:
    refuse(layout, [M("a", "dir"), M("a/", "dir")])


def test_refuses_file_over_dir(layout: Layout) -> None:
    refuse(layout, [M("a/b", data=b"1"), M("a", data=b"2")])


def test_refuses_file_under_file(layout: Layout) -> None:
    err = refuse(layout, [M("a", data=b"1"), M("a/b", data=b"2")])
    assert reason(err) == "parent 'a' is not a directory"


@pytest.mark.parametrize("name", [".complete", "./.complete", ".complete/x"])
def test_refuses_reserved_top_level_name(layout: Layout, name: str) -> None:
    err = refuse(layout, [M(name, data=b"")])
    assert reason(err) == "reserved name"
    assert not (layout.dest / ".complete").exists()


# --- refused types -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["chr", "blk"])
def test_refuses_device_node(layout: Layout, kind: str) -> None:
    err = refuse(layout, [M("dev/null", kind)])
    assert reason(err) == "device node"
    assert not (layout.dest / "dev/null").exists()


def test_refuses_fifo(layout: Layout) -> None:
    err = refuse(layout, [M("fifo", "fifo")])
    assert reason(err) == "FIFO"
    assert not (layout.dest / "fifo").exists()


# --- symlinks ------------------------------------------------------------------------


def test_refuses_write_through_symlink_to_parent(layout: Layout) -> None:
    err = refuse(layout, [M("link", "symlink", target=".."), M("link/evil", data=b"x")])
    assert "'link/evil'" in err.message
    assert reason(err) == "path goes through the symlink 'link'"


def test_refuses_write_through_absolute_symlink(layout: Layout) -> None:
    members = [M("link", "symlink", target=str(layout.sentinel)), M("link/evil", data=b"x")]
    refuse(layout, members)
    assert not (layout.sentinel / "evil").exists()


def test_refuses_dir_through_symlink(layout: Layout) -> None:
    members = [M("link", "symlink", target=str(layout.sentinel)), M("link/sub", "dir")]
    refuse(layout, members)


def test_refuses_symlink_after_file_through_it(layout: Layout) -> None:
    members = [M("link/evil", data=b"x"), M("link", "symlink", target=str(layout.sentinel))]
    err = refuse(layout, members)
    assert "'link'" in err.message
    assert reason(err) == "conflicts with an earlier dir at the same path"
    assert not (layout.dest / "link").is_symlink()


def test_refuses_symlink_duplicate(layout: Layout) -> None:
    refuse(layout, [M("l", "symlink", target="a"), M("l", "symlink", target="b")])


def test_refuses_file_after_symlink_same_path(layout: Layout) -> None:
    refuse(layout, [M("l", "symlink", target=str(layout.sentinel / "keep")), M("l", data=b"x")])


def test_refuses_nul_in_symlink_target(layout: Layout) -> None:
    err = refuse(layout, [M("l", "symlink", pax={"linkpath": "a\x00b"})])
    assert reason(err) == "NUL byte in symlink target"


# --- hardlinks -----------------------------------------------------------------------


def test_refuses_hardlink_outside(layout: Layout) -> None:
    err = refuse(layout, [M("passwd", "hardlink", target="../../etc/passwd")])
    assert "'passwd -> ../../etc/passwd'" in err.message
    assert reason(err) == "path escapes the root"


def test_refuses_hardlink_absolute(layout: Layout) -> None:
    refuse(layout, [M("keep", "hardlink", target=str(layout.sentinel / "keep"))])


def test_refuses_hardlink_to_symlink(layout: Layout) -> None:
    members = [
        M("l", "symlink", target=str(layout.sentinel / "keep")),
        M("h", "hardlink", target="l"),
    ]
    err = refuse(layout, members)
    assert reason(err) == "hardlink target is a symlink"


def test_refuses_hardlink_to_dir(layout: Layout) -> None:
    err = refuse(layout, [M("d", "dir"), M("h", "hardlink", target="d")])
    assert reason(err) == "hardlink target is a dir"


def test_refuses_hardlink_to_later_member(layout: Layout) -> None:
    err = refuse(layout, [M("h", "hardlink", target="f"), M("f", data=b"x")])
    assert reason(err) == "hardlink target is not an earlier regular file"
    assert not (layout.dest / "h").exists()


def test_refuses_hardlink_to_itself(layout: Layout) -> None:
    refuse(layout, [M("h", "hardlink", target="h")])


# --- caps ----------------------------------------------------------------------------


def test_refuses_file_over_max_file_size(layout: Layout) -> None:
    limits = Limits(max_members=10, max_file_size=1000, max_total_size=10_000)
    # The data is cut off: reading it would fail differently, so the cap fires first.
    data = make_tar([M("big", data=b"x" * 1001)])[:1536]
    with pytest.raises(PayloadCorrupt, match="over the cap of 1000"):
        extract(data, layout.dest, limits)
    assert not (layout.dest / "big").exists()
    layout.assert_nothing_outside()


def test_refuses_total_over_max_total_size(layout: Layout) -> None:
    limits = Limits(max_members=10, max_file_size=1000, max_total_size=1000)
    members = [M("a", data=b"x" * 600), M("b", data=b"x" * 600)]
    err = refuse(layout, members, limits)
    assert "'b'" in err.message
    assert not (layout.dest / "b").exists()


def test_refuses_too_many_members(layout: Layout) -> None:
    limits = Limits(max_members=3, max_file_size=1000, max_total_size=1000)
    members = [M("."), M("a", "dir"), M("a/b", data=b""), M("c", "symlink", target="a"), M("d")]
    members[0].kind = "dir"
    err = refuse(layout, members, limits)
    assert "'d'" in err.message
    assert reason(err) == "more than 3 members"


def test_exactly_max_members_is_fine(layout: Layout) -> None:
    limits = Limits(max_members=3, max_file_size=1000, max_total_size=1000)
    members = [M(".", "dir"), M("a", "dir"), M("a/b", data=b""), M("c", "symlink", target="a")]
    assert extract(make_tar(members), layout.dest, limits).members == 3


# --- damaged streams -----------------------------------------------------------------


def _valid_tar() -> tuple[bytes, list[tarfile.TarInfo]]:
    members = [
        M("a", "dir"),
        M("a/one", data=os.urandom(5000)),
        M("a/" + "long" * 40, data=b"two" * 100),  # needs a PAX header for its name
        M("a/three", data=b"three"),
    ]
    data = make_tar(members)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = tar.getmembers()
    return data, infos


def _cut(where: str) -> bytes:
    data, infos = _valid_tar()
    one, long, last = infos[1], infos[2], infos[-1]
    assert long.offset_data - long.offset == 3 * 512  # PAX header, its record, real header
    cuts = {
        "mid-data": one.offset_data + 1000,
        "mid-header": last.offset + 100,
        "mid-pax-record": long.offset + 512 + 10,
        "after-pax-header": long.offset + 1024,
        "at-member-boundary": last.offset_data + 512,  # every member there, no end marker
    }
    return data[: cuts[where]]


@pytest.mark.parametrize(
    "where",
    ["mid-data", "mid-header", "mid-pax-record", "after-pax-header", "at-member-boundary"],
)
def test_refuses_truncated_stream(layout: Layout, where: str) -> None:
    with pytest.raises(PayloadCorrupt, match="damaged payload"):
        extract(_cut(where), layout.dest)
    layout.assert_nothing_outside()


def test_refuses_garbage(layout: Layout) -> None:
    with pytest.raises(PayloadCorrupt, match="damaged payload"):
        extract(random.Random(1234).randbytes(20_000), layout.dest)
    assert os.listdir(layout.dest) == []
    layout.assert_nothing_outside()


def test_refuses_garbage_after_a_valid_member(layout: Layout) -> None:
    data, infos = _valid_tar()
    cut = infos[1].offset_data + 5120  # right after a/one's data
    garbage = random.Random(5).randbytes(4096)
    with pytest.raises(PayloadCorrupt, match="damaged payload"):
        extract(data[:cut] + garbage, layout.dest)
    layout.assert_nothing_outside()


def test_refuses_empty_stream(layout: Layout) -> None:
    with pytest.raises(PayloadCorrupt):
        extract(b"", layout.dest)


# --- generated archives --------------------------------------------------------------

SENTINEL = "@SENTINEL@"
_wild_names = st.builds(
    lambda prefix, parts, slash: prefix + "/".join(parts) + ("/" if slash else ""),
    st.sampled_from(["", "./", "/", "//", "../", SENTINEL + "/"]),
    st.lists(st.sampled_from(["a", "b", ".", "..", "", ".complete"]), min_size=1, max_size=4),
    st.booleans(),
)
_wild_targets = st.one_of(
    _wild_names, st.sampled_from(["..", "../..", "/", SENTINEL, SENTINEL + "/keep", "."])
)
_modes = st.sampled_from([0o644, 0o755, 0o4755, 0o2775, 0o1777, 0o555, 0o000])


@st.composite
def _archives(draw: st.DrawFn) -> list[M]:
    """Member lists that are often valid: mostly plausible names with unique leaves under
    a few shared directories, links to earlier members, and now and then a hostile name,
    a reused name or a link to anything (any of which refuses the whole archive)."""

    def hostile() -> bool:
        return draw(st.integers(0, 9)) == 9

    def name(index: int, *, is_dir: bool = False, shared: bool = False) -> str:
        if hostile():
            return draw(_wild_names)
        parents = draw(st.lists(st.sampled_from(["a", "b"]), max_size=2))
        leaf = draw(st.sampled_from(["a", "b"])) if shared or hostile() else f"m{index}"
        prefix = draw(st.sampled_from(["", "./"]))
        return prefix + "/".join([*parents, leaf]) + ("/" if is_dir and hostile() else "")

    members: list[M] = []
    for index in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["file", "file", "dir", "symlink", "hardlink"]))
        if kind == "file":
            data = draw(st.binary(max_size=64))
            members.append(M(name(index), kind, data, draw(_modes)))
        elif kind == "dir":
            members.append(M(name(index, is_dir=True), kind, mode=draw(_modes)))
        else:
            # Hardlinks mostly aim at earlier files, symlinks at any earlier member.
            earlier = [m.name for m in members if kind == "symlink" or m.kind == "file"]
            if earlier and not hostile():
                target = draw(st.sampled_from(earlier))
            elif kind == "symlink":
                target = draw(st.one_of(_wild_targets, st.sampled_from(["a", "b", "m0"])))
            else:
                target = draw(_wild_names)
            # A symlink named like a shared directory lets later members go through it.
            shared = kind == "symlink" and draw(st.integers(0, 3)) == 3
            members.append(M(name(index, shared=shared), kind, target=target))
    return members


def _assert_tree_matches(dest: Path, result: ExtractResult) -> None:
    """Every entry exists as recorded, under real directories only, and nothing else."""
    expected = {""}
    for entry in result.entries:
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            parent = dest.joinpath(*parts[:depth])
            assert stat.S_ISDIR(parent.lstat().st_mode), parent  # not a symlink
            expected.add("/".join(parts[:depth]))
        expected.add(entry.path)
        st_ = dest.joinpath(entry.path).lstat()
        if entry.kind in ("file", "hardlink"):
            assert stat.S_ISREG(st_.st_mode)
            assert sha(dest.joinpath(entry.path).read_bytes()) == entry.digest
            assert stat.S_IMODE(st_.st_mode) == entry.mode
            assert not st_.st_mode & (stat.S_ISUID | stat.S_ISGID)
        elif entry.kind == "dir":
            assert stat.S_ISDIR(st_.st_mode)
            assert stat.S_IMODE(st_.st_mode) == entry.mode
            assert not st_.st_mode & (stat.S_ISUID | stat.S_ISGID)
            if st_.st_mode & stat.S_IWOTH:  # world-writable only as a sticky dir (/tmp)
                assert st_.st_mode & stat.S_ISVTX
        else:
            assert stat.S_ISLNK(st_.st_mode)
            assert os.readlink(dest.joinpath(entry.path)) == entry.digest
    found = {""}
    for dirpath, dirnames, filenames in os.walk(dest):  # does not follow symlinks
        for name in dirnames + filenames:
            found.add(str(Path(dirpath, name).relative_to(dest)))
    assert found == expected


@pytest.fixture(scope="module")
def hypothesis_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generated")


@settings(max_examples=200, deadline=None)
@given(members=_archives())
def test_generated_archives_never_escape(hypothesis_base: Path, members: list[M]) -> None:
    with tempfile.TemporaryDirectory(dir=hypothesis_base) as tmp:
        layout = Layout.make(Path(tmp))

        def place(text: str) -> str:
            return text.replace(SENTINEL, str(layout.sentinel))

        concrete = [M(place(m.name), m.kind, m.data, m.mode, place(m.target)) for m in members]
        try:
            result = extract(make_tar(concrete), layout.dest)
        except PayloadCorrupt:
            result = None
        layout.assert_nothing_outside()
        if result is not None:
            _assert_tree_matches(layout.dest, result)


@pytest.mark.parametrize("name", ["usr/bin/a\tb", "etc/x\ny", "esc\x1b[31m", "del\x7f"])
def test_control_characters_in_names_are_refused(tmp_path: Path, name: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PayloadCorrupt, match="control character in name"):
        extract(make_tar([M(name, "file", data=b"x")]), dest)
    assert list(dest.iterdir()) == []


def test_control_characters_in_symlink_targets_are_refused(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PayloadCorrupt, match="control character in symlink target"):
        extract(make_tar([M("link", "symlink", target="a\nb")]), dest)
