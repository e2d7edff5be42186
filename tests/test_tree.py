"""Tests of launcher.cache.tree: 10,000-deep trees walked and removed, symlinks planted to
directories outside, read-only directories removed as their (unprivileged) owner."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HOST_PYTHON, ROOT, needs_root

from launcher.cache import tree

DEPTH = 10_000
NOBODY = 65534


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory no walk or removal may touch, with one file."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "keep").write_bytes(b"keep")
    return path


@pytest.fixture
def deep_top(tmp_path: Path) -> Iterator[Path]:
    """Where a deep tree goes; removed even when the test fails (pytest's own cleanup,
    shutil.rmtree, recurses and would fail on it)."""
    path = tmp_path / "deep"
    yield path
    tree.remove_tree(str(path), ignore_errors=True)


def assert_outside_intact(outside: Path) -> None:
    assert sorted(os.listdir(outside)) == ["keep"]
    assert (outside / "keep").read_bytes() == b"keep"


def make_deep(top: Path, depth: int, outside: Path, every: int = 1000) -> int:
    """top/d/d/.../d (`depth` levels) with a file and a symlink to `outside` every `every`
    levels; built through dir fds (the path is far longer than PATH_MAX). Returns the
    number of entries below top."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    entries = 0
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            entries += 1
            if level % every == 0:
                os.symlink(str(outside), "link", dir_fd=fd)
                file_fd = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(file_fd, b"x" * level)
                os.close(file_fd)
                entries += 2
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return entries


def test_deep_tree_is_walked_and_removed(deep_top: Path, outside: Path) -> None:
    top = deep_top
    entries = make_deep(top, DEPTH, outside)
    before = open_fds()

    seen = 0
    deepest = ""
    for rel, st, parent_fd, name in tree.walk(str(top)):
        seen += 1
        assert "link/" not in rel and name != "keep"  # never inside the symlink
        if name == "link":
            assert stat.S_ISLNK(st.st_mode)
            assert os.readlink(name, dir_fd=parent_fd) == str(outside)
        if len(rel) > len(deepest):
            deepest = rel
    assert seen == entries
    assert deepest == "/".join(["d"] * DEPTH)
    assert open_fds() == before

    files = [(rel.count("/"), kind, size) for rel, kind, _m, size, _d in tree.walk_files(str(top))]
    expected = [(i, "file", i) for i in range(0, DEPTH, 1000)]
    assert sorted(f for f in files if f[1] == "file") == expected  # depth first: deepest first
    assert tree.tree_size(str(top)) == sum(range(0, DEPTH, 1000))
    assert open_fds() == before

    tree.remove_tree(str(top))
    assert not os.path.lexists(top)
    assert_outside_intact(outside)
    assert open_fds() == before


def test_walk_files_reports_kinds_modes_and_digests(tmp_path: Path, outside: Path) -> None:
    top = tmp_path / "t"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "a").write_bytes(b"alpha")
    (top / "sub" / "a").chmod(0o640)
    os.link(top / "sub" / "a", top / "hard")
    (top / "link").symlink_to(outside)
    os.mkfifo(top / "fifo")
    got = list(tree.walk_files(str(top)))
    alpha = hashlib.sha256(b"alpha").hexdigest()
    assert got == [
        ("fifo", "other", 0o644 & ~current_umask(), 0, ""),
        ("hard", "file", 0o640, 5, alpha),
        ("link", "symlink", 0o777, 0, str(outside)),
        ("sub", "dir", stat.S_IMODE((top / "sub").lstat().st_mode), 0, ""),
        ("sub/a", "file", 0o640, 5, alpha),
    ]
    assert tree.tree_size(str(top)) == 5  # the hardlink counts once


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_walk_reports_unopenable_directories(tmp_path: Path) -> None:
    problems: list[str] = []
    assert list(tree.walk(str(tmp_path / "missing"), problems.append)) == []
    assert problems == ["missing/: cannot be opened as a directory (No such file or directory)"]
    with pytest.raises(FileNotFoundError):
        list(tree.walk(str(tmp_path / "missing")))


def test_remove_tree_on_a_symlink_removes_only_the_link(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(outside)
    tree.remove_tree(str(link))
    assert not os.path.lexists(link)
    assert_outside_intact(outside)


def test_remove_tree_of_missing_path_and_of_a_file(tmp_path: Path) -> None:
    tree.remove_tree(str(tmp_path / "missing"))
    (tmp_path / "file").write_bytes(b"x")
    tree.remove_tree(str(tmp_path / "file"))
    assert os.listdir(tmp_path) == []


def read_only_tree(top: Path, outside: Path) -> None:
    """Directories the way a published rootfs has them: 0555, 0500, even 0000."""
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "file").write_bytes(b"x")
    (top / "a" / "link").symlink_to(outside)
    (top / "locked").mkdir()
    (top / "locked" / "inner").write_bytes(b"y")
    (top / "a" / "b").chmod(0o500)
    (top / "a").chmod(0o555)
    (top / "locked").chmod(0o000)
    top.chmod(0o500)


def test_remove_tree_read_only_dirs(tmp_path: Path, outside: Path) -> None:
    top = tmp_path / "ro"
    read_only_tree(top, outside)
    tree.remove_tree(str(top))
    assert not os.path.lexists(top)
    assert_outside_intact(outside)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A world-traversable dir (pytest's tmp is 0700 root) for another user's tree."""
    base = Path("/tmp") / f"ar-tree-{os.getpid()}"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@needs_root
def test_remove_tree_read_only_dirs_as_their_unprivileged_owner(shared: Path) -> None:
    """Without CAP_DAC_OVERRIDE a 0500 dir cannot lose entries, a 0000 one cannot even be
    listed: remove_tree makes them the owner's first, and touches nothing outside."""
    outside = shared / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    top = shared / "ro"
    top.mkdir()
    make_deep(top / "deep", 1500, outside, every=500)
    read_only_tree(top / "x", outside)
    subprocess.run(["chown", "-R", "-h", f"{NOBODY}:{NOBODY}", str(shared)], check=True)
    top.chmod(0o500)
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from launcher.cache import tree"
    proc = subprocess.run(
        [HOST_PYTHON, "-I", "-c", f"{code}; tree.remove_tree(sys.argv[1])", str(top)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert not os.path.lexists(top)
    assert_outside_intact(outside)


@needs_root
def test_remove_tree_reports_errors_and_goes_on(tmp_path: Path) -> None:
    """A mount point cannot be removed (EBUSY): reported, and everything else goes."""
    top = tmp_path / "t"
    (top / "a").mkdir(parents=True)
    (top / "b").mkdir()
    (top / "b" / "f").write_bytes(b"")
    errors: list[tuple[str, int | None]] = []
    subprocess.run(["mount", "--bind", str(top / "a"), str(top / "a")], check=True)
    try:
        tree.remove_tree(str(top), on_error=lambda path, exc: errors.append((path, exc.errno)))
        assert errors == [(f"{top}/a", errno.EBUSY), (str(top), errno.ENOTEMPTY)]
        assert os.listdir(top) == ["a"]
        with pytest.raises(OSError) as caught:
            tree.remove_tree(str(top))
        assert caught.value.errno == errno.EBUSY
        tree.remove_tree(str(top), ignore_errors=True)
    finally:
        subprocess.run(["umount", str(top / "a")], check=True)
    tree.remove_tree(str(top))
    assert not os.path.lexists(top)


def test_a_directory_moved_mid_walk_stops_the_walk(tmp_path: Path, outside: Path) -> None:
    """Going back up through "..", a level must be the directory we came down through."""
    top = tmp_path / "deep"
    make_deep(top, 3 * tree.MAX_OPEN, outside, every=10**9)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    walker = tree.walk(str(top))
    moved = False
    with pytest.raises(OSError) as caught:
        for rel, _st, _fd, _name in walker:
            if not moved and rel.count("/") == 2 * tree.MAX_OPEN:
                # Deep below, move a level whose fd the walk has closed to elsewhere.
                fd = os.open(str(top / "d" / "d"), os.O_RDONLY)
                os.rename("d", str(elsewhere / "d"), src_dir_fd=fd)
                os.close(fd)
                moved = True
    assert caught.value.errno == errno.ESTALE
    assert moved


@pytest.mark.parametrize("path", ["", ".", "/", "a/..", "./"])
def test_remove_tree_refuses_paths_that_name_no_entry(path: str) -> None:
    with pytest.raises(ValueError, match="refusing to remove"):
        tree.remove_tree(path)


def test_deep_trees_in_the_cache_through_verify_gc_and_clear(
    app: Path, tmp_path: Path, outside: Path
) -> None:
    """The single file itself: a 1,500-deep tree planted in a published rootfs is reported
    by `cache verify`, a 10,000-deep `.trash-*` is swept by `cache gc`, and `cache clear`
    removes the version, with symlinks to `outside` planted at every level of both."""
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_REVIEW_")}
    env["AUTO_REVIEW_CACHE_DIR"] = str(cache)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [HOST_PYTHON, str(app), *args], env=env, capture_output=True, text=True, timeout=300
        )

    assert cli("-q", "cache", "prepare").returncode == 0
    bundles = cache / "v1" / "bundles"
    [version] = [p for p in bundles.iterdir() if p.is_dir()]
    trash = bundles / ".trash-planted"
    try:
        make_deep(version / "rootfs" / "tmp" / "deep", 1500, outside, every=1)
        make_deep(trash, DEPTH, outside, every=1000)

        verify = cli("cache", "verify")
        assert verify.returncode == 65, verify.stderr
        assert "Traceback" not in verify.stderr and len(verify.stderr.splitlines()) == 1
        assert "tmp/deep: not in the file list" in verify.stderr

        gc = cli("cache", "gc")
        assert gc.returncode == 0, gc.stderr
        assert not os.path.lexists(trash)

        clear = cli("cache", "clear")
        assert clear.returncode == 0, clear.stderr
        assert [p for p in bundles.iterdir() if p.is_dir()] == []
        assert not [p for p in bundles.iterdir() if p.name.startswith((".trash-", ".tmp-"))]
    finally:
        tree.remove_tree(str(cache), ignore_errors=True)
    assert_outside_intact(outside)
