"""The publish protocol's own pieces (launcher.cache.publish): the work dir it fills and
the writeback a cold start starts early. The protocol end to end (kill -9, races, a
full disk) is tested through the single file in test_cache.py and test_cache_trust.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from launcher.cache import publish


def test_a_work_dir_is_new_private_and_named_for_its_leftover_sweep(tmp_path: Path) -> None:
    """make_work_dir replaces tempfile.mkdtemp on the cold path: each call makes a new
    0700 directory (whatever the umask) whose name remove_leftovers recognizes."""
    old = os.umask(0)
    try:
        made = {publish.make_work_dir(str(tmp_path), ".tmp-x-") for _ in range(50)}
    finally:
        os.umask(old)
    assert len(made) == 50
    for path in made:
        st = os.lstat(path)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
        assert os.path.dirname(path) == str(tmp_path)
        assert os.path.basename(path).startswith(".tmp-x-")
    publish.remove_leftovers(str(tmp_path), "x")
    assert os.listdir(tmp_path) == []


def test_a_taken_work_dir_name_is_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that exists (a planted dir, a symlink, a file) is skipped, never entered."""
    names = iter([b"\x00" * 6, b"\x00" * 6, b"\x01" * 6])
    monkeypatch.setattr(os, "urandom", lambda n: next(names))
    taken = tmp_path / (".tmp-x-" + "00" * 6)
    taken.symlink_to("/")
    path = publish.make_work_dir(str(tmp_path), ".tmp-x-")
    assert path == str(tmp_path / (".tmp-x-" + "01" * 6))
    assert taken.is_symlink() and os.readlink(taken) == "/"


def test_a_directory_of_taken_names_is_an_error_not_a_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "urandom", lambda n: b"\x07" * n)
    (tmp_path / (".tmp-x-" + "07" * 6)).mkdir()
    with pytest.raises(FileExistsError):
        publish.make_work_dir(str(tmp_path), ".tmp-x-")


def test_ctrl_c_the_moment_the_work_dir_exists_leaves_no_work_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C lands between bytecodes, so also right after the work dir's mkdir and
    before the publish has a name for it (a real Ctrl-C did so under load, in
    test_cache.py's decoder-lock test). The interrupt is injected there."""
    real_mkdir = os.mkdir

    def mkdir_then_interrupted(path: str, mode: int = 0o777) -> None:
        real_mkdir(path, mode)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "mkdir", mkdir_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        publish.publish(str(tmp_path / "x"), lambda work: None, waiting_for="", lock_held=True)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_taken_name_is_not_counted_as_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a failed publish removes is only what it made: a name that was taken is
    dropped from its list."""
    names = iter([b"\x00" * 6, b"\x01" * 6])
    monkeypatch.setattr(os, "urandom", lambda n: next(names))
    (tmp_path / (".tmp-x-" + "00" * 6)).mkdir()
    made: list[str] = []
    path = publish.make_work_dir(str(tmp_path), ".tmp-x-", made)
    assert made == [path] == [str(tmp_path / (".tmp-x-" + "01" * 6))]


def test_early_writeback_leaves_the_file_whole_and_skips_small_ones(tmp_path: Path) -> None:
    """The hook only starts writing (it never waits, never fails the unpack): the bytes
    stay what was written, a closed or bad fd is ignored, and a small file makes no call
    (an fd of -1 would fail the call; the small size never reaches it)."""
    start = publish.writeback_starter()
    assert start is not None, "sync_file_range is in every Linux libc"
    data = os.urandom(publish.EARLY_WRITEBACK_BYTES + 4096)
    path = tmp_path / "big"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        start(fd, len(data))
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    start(-1, len(data))  # EBADF: the sync before publishing is what reports errors
    start(-1, 10)
