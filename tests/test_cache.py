"""The cache protocol through the real single file: one extraction under concurrency,
crash safety under SIGKILL, ENOSPC, corruption, hostile roots, every CPython 3.10-3.13."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    HOST_PYTHON,
    ROOT,
    find_cpython,
    needs_root,
    other_cpython,
    preamble_command,
    rewrite_app,
    run_app,
    without_host_libzstd,
)

PAYLOAD = "bundle/rootfs.tar.zst"


def bundles(cache: Path) -> Path:
    return cache / "v1" / "bundles"


def published(cache: Path) -> list[Path]:
    """Version dirs (published or not) under the cache."""
    root = bundles(cache)
    if not root.exists():
        return []
    return [p for p in root.iterdir() if p.name.startswith("sha256-") and "." not in p.name]


def work_dirs(cache: Path) -> list[Path]:
    root = bundles(cache)
    return (
        [p for p in root.iterdir() if p.name.startswith((".tmp-", ".trash-"))]
        if root.exists()
        else []
    )


def assert_nothing_published(cache: Path) -> None:
    assert published(cache) == []
    assert work_dirs(cache) == []


def env_for(cache: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache), **extra)
    env.pop("AUTO_REVIEW_BUNDLE", None)
    return env


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at `path` (we run as root in CI)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_cold_then_warm(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = run_app(app, "cache", "prepare", env=env_for(cache))
    assert first.returncode == 0, first.stderr
    assert "unpacked" in first.stderr
    [version] = published(cache)
    assert (version / ".complete").exists()
    assert (version / "rootfs" / "usr" / "bin" / "git").is_file()
    assert (
        (cache / "CACHEDIR.TAG")
        .read_text()
        .startswith("Signature: 8a477f597d28d172789f06886806bc55")
    )
    for d in (cache, cache / "v1", bundles(cache)):
        assert d.stat().st_mode & 0o777 == 0o700
    second = run_app(app, "cache", "prepare", env=env_for(cache))
    assert second.returncode == 0
    assert "unpacked" not in second.stderr
    assert run_app(app, "cache", "verify", env=env_for(cache)).returncode == 0


def test_sixteen_concurrent_cold_starts_extract_once(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [HOST_PYTHON, str(app), "cache", "prepare"],
            env=env_for(cache),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(16)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0] * 16, [r[2] for r in results]
    assert sum("unpacked" in r[2] for r in results) == 1
    assert len(published(cache)) == 1
    assert work_dirs(cache) == []
    assert len({r[1].strip() for r in results}) == 1


def test_a_cold_start_waits_for_the_unpacker_before_importing_the_unpacking_code(
    app: Path, tmp_path: Path
) -> None:
    """While another process holds the version's publish lock (as the one unpacking
    does), a second cold start sleeps on it with only the warm path's modules loaded:
    of 16 cold starts at once, 15 then cost an interpreter and a few imports, not the
    tar reader and the decoder (bench/cases_cold.py: 16 concurrent cold starts). When
    the lock is free and nothing is published, the same process unpacks."""
    import fcntl

    cache = tmp_path / "cache"
    digest = json.loads(run_app(app, "bundle", "info", "--json").stdout)["digest"]
    root = bundles(cache)
    root.mkdir(mode=0o700, parents=True)
    os.chmod(cache, 0o700)
    os.chmod(cache / "v1", 0o700)
    lock = root / f"sha256-{digest.removeprefix('sha256:')}.extract.lock"
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    proc = subprocess.Popen(
        [HOST_PYTHON, "-X", "importtime", str(app), "cache", "prepare"],
        env=env_for(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        before = []
        for line in proc.stderr:  # each line waits on the process, not on a clock
            if "waiting for another auto-review" in line:
                break
            before.append(line)
        imported = {line.split("|")[-1].strip() for line in before if "|" in line}
        assert "launcher.cache.warm" in imported
        assert not imported & {"launcher.cache.bundle", "launcher.cache.extract",
                               "launcher.cache.tarstream", "launcher.cache.zstd"}  # fmt: skip
    finally:
        os.close(fd)  # the "unpacker" gives up without publishing: the waiter unpacks
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "auto-review: unpacked" in err
    assert len(published(cache)) == 1 and work_dirs(cache) == []


def test_a_code_dir_the_cache_cannot_take_is_one_warning_and_the_run_goes_on(
    app: Path, tmp_path: Path
) -> None:
    """Under an interpreter the single file has no bytecode for, the launcher compiles
    its code into `v1/code`. When that is not a directory it cannot: the unpack still
    publishes, the launcher runs from the zip, and the reason is said once per run (it
    was said twice)."""
    cache = tmp_path / "cache"
    (cache / "v1").mkdir(parents=True, mode=0o700)
    cache.chmod(0o700)
    (cache / "v1" / "code").write_text("")
    python = other_cpython()
    for cold in (True, False):
        result = run_app(app, "cache", "prepare", env=env_for(cache), python=python)
        assert result.returncode == 0, result.stderr
        said = [line for line in result.stderr.splitlines() if "launcher code" in line]
        assert len(said) == 1, result.stderr
        assert "v1/code is not a directory" in said[0]
        assert ("auto-review: unpacked" in result.stderr) is cold
        assert len(published(cache)) == 1 and work_dirs(cache) == []
    assert (cache / "v1" / "code").read_text() == ""


def held_lock(path: Path) -> int:
    """Hold `path` exclusive, as another auto-review publishing what it guards does."""
    import fcntl

    cache, v1, parent = path.parents[2], path.parents[1], path.parent
    parent.mkdir(mode=0o700, parents=True)
    for level in (cache, v1):
        level.chmod(0o700)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_busy_code_dir_lock_is_one_warning_and_the_unpack_goes_on(
    app: Path, tmp_path: Path
) -> None:
    """Under an interpreter the single file has no bytecode for, the code dir is
    published before the unpack; when another launcher of the same code holds its
    publish lock past AUTO_REVIEW_LOCK_TIMEOUT, this one says so in one line, runs
    from the zip and publishes the version. (When a thread beside the unpack waited
    on that lock, it was a ValueError traceback.)"""
    cache = tmp_path / "cache"
    code_id = imported_code_id(app)
    fd = held_lock(cache / "v1" / "code" / f"{code_id}.extract.lock")
    try:
        result = run_app(app, "cache", "prepare", python=other_cpython(),
                         env=env_for(cache, AUTO_REVIEW_LOCK_TIMEOUT="1"))  # fmt: skip
    finally:
        os.close(fd)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    said = [line for line in result.stderr.splitlines() if "cannot cache the launcher" in line]
    assert len(said) == 1 and "gave up after 1 s" in said[0], result.stderr
    assert "auto-review: unpacked" in result.stderr
    assert len(published(cache)) == 1 and work_dirs(cache) == []


def cold_start_behind_a_held_vendor_lock(
    app: Path, tmp_path: Path, cache: Path, **env: str
) -> tuple[int, subprocess.Popen[str]]:
    """A cold start on a host without libzstd, into `cache`, while the test holds the
    publish lock of the vendored zstd module (named by a first run elsewhere): (the
    lock's fd, the running launcher)."""
    first = tmp_path / "first"
    no_libzstd = without_host_libzstd()
    assert run_app(app, "cache", "prepare", env=env_for(first), prefix=no_libzstd).returncode == 0
    [vendored] = [p.name for p in (first / "v1" / "vendor").iterdir() if p.is_dir()]
    fd = held_lock(cache / "v1" / "vendor" / f"{vendored}.extract.lock")
    proc = subprocess.Popen([*no_libzstd, HOST_PYTHON, str(app), "cache", "prepare"],
                            env=env_for(cache, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    return fd, proc


@needs_root
def test_the_decoder_thread_waits_for_another_launcher_publishing_the_zstd_module(
    app: Path, tmp_path: Path
) -> None:
    """On a host without libzstd, the vendored zstd module is published by the decoding
    thread; two versions starting cold at once share it, so one waits for the other's
    publish lock. That wait runs off the main thread (it was a ValueError traceback); it
    ends when the lock is released, and the unpack goes on."""
    cache = tmp_path / "cache"
    fd, proc = cold_start_behind_a_held_vendor_lock(app, tmp_path, cache)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # waits on the process, not on a clock
        assert "waiting for another auto-review" in line and "zstd decoder" in line, line
    finally:
        os.close(fd)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, line + err
    assert "auto-review: unpacked" in err
    assert len(published(cache)) == 1 and work_dirs(cache) == []


@needs_root
def test_ctrl_c_while_the_decoder_thread_waits_for_a_lock_ends_the_run_at_once(
    app: Path, tmp_path: Path
) -> None:
    """Ctrl-C during a cold start whose decoder waits for another launcher's publish
    of the zstd module: the run ends (130, nothing published) without waiting for that
    launcher; joining the decoder used to wait out AUTO_REVIEW_LOCK_TIMEOUT."""
    cache = tmp_path / "cache"
    fd, proc = cold_start_behind_a_held_vendor_lock(
        app, tmp_path, cache, AUTO_REVIEW_LOCK_TIMEOUT="3600"
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # waits on the process, not on a clock
        assert "waiting for another auto-review" in line, line
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)  # the lock is still held meanwhile
    finally:
        os.close(fd)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, line + err
    assert "Traceback" not in err
    assert_nothing_published(cache)


def imported_code_id(app: Path) -> str:
    """The code id build.py wrote into the single file's __main__.py."""
    with zipfile.ZipFile(app) as zf:
        main = zf.read("__main__.py").decode()
    return main.split('CODE_ID = "', 1)[1].split('"', 1)[0]


def test_a_first_run_skips_gc_only_when_the_cache_holds_nothing_else(
    app: Path, tmp_path: Path
) -> None:
    """GC after an unpack costs its imports; in a cache holding only what this run made
    it would find nothing, so it is skipped. An orphan lock file or a leftover there
    makes it run, and sweep them."""

    def cold(cache: Path) -> str:
        result = subprocess.run([HOST_PYTHON, "-X", "importtime", str(app), "cache", "prepare"],
                                env=env_for(cache), capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(published(cache)) == 1
        return result.stderr

    assert "launcher.cache.gc" not in cold(tmp_path / "clean")
    dirty = tmp_path / "dirty"
    root = bundles(dirty)
    root.mkdir(parents=True, mode=0o700)
    for level in (dirty, dirty / "v1"):
        level.chmod(0o700)
    other = "sha256-" + "ab" * 32
    (root / f"{other}.use.lock").write_text("")  # its version is gone
    (root / f".trash-{other}-1").mkdir(mode=0o700)  # a removal that was killed
    assert "launcher.cache.gc" in cold(dirty)
    [version] = published(dirty)
    left = sorted(p.name for p in root.iterdir())
    assert left == sorted(version.name + end for end in ("", ".extract.lock", ".labels",
                                                         ".use.lock"))  # fmt: skip


def test_the_cached_bytecode_names_its_own_absolute_source(app: Path, tmp_path: Path) -> None:
    """The build compiles the launcher as "launcher/x.py"; copied as is into the code
    cache, a traceback would read that name relative to the working dir and show the
    lines of whatever file sits there. Every code object names the cached archive."""
    import marshal
    import types

    cache = tmp_path / "cache"
    run_app(app, "cache", "prepare", env=env_for(cache), check=True, python=other_cpython())
    [archive] = glob.glob(str(cache / "v1" / "code" / "*" / "launcher.zip"))
    with zipfile.ZipFile(archive) as zf:
        pycs = [n for n in zf.namelist() if n.endswith(".pyc")]
        assert "launcher/cache/warm.pyc" in pycs
        for name in pycs:
            todo = [marshal.loads(zf.read(name)[16:])]
            while todo:
                code = todo.pop()
                assert code.co_filename == os.path.join(archive, name[:-1]), name
                todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]


def cold_seconds(app: Path, cache: Path) -> float:
    started = time.monotonic()
    run_app(app, "cache", "prepare", env=env_for(cache), check=True)
    elapsed = time.monotonic() - started
    shutil.rmtree(cache)
    return elapsed


def test_sigkill_at_random_points_never_leaves_a_partial_tree(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    span = cold_seconds(app, cache)
    rng = random.Random(1234)
    killed_mid_way = 0
    for _round in range(50):
        proc = subprocess.Popen(
            [HOST_PYTHON, str(app), "-q", "cache", "prepare"],
            env=env_for(cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.0, span))
        proc.kill()
        proc.wait()
        for version in published(cache):  # whatever is visible must be whole
            assert (version / ".complete").exists(), "a version dir without its marker"
        if not published(cache):
            killed_mid_way += 1
        again = run_app(app, "-q", "cache", "prepare", env=env_for(cache))
        assert again.returncode == 0, again.stderr
        assert work_dirs(cache) == []
        verify = run_app(app, "cache", "verify", env=env_for(cache))
        assert verify.returncode == 0, verify.stdout + verify.stderr
        shutil.rmtree(cache)
    assert killed_mid_way >= 10, "the kills should land during extraction"


@needs_root
def test_not_enough_space_is_refused_before_extracting(app: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "size=8m,mode=0700") as cache:
        result = run_app(app, "cache", "prepare", env=env_for(cache))
        assert result.returncode == 74, result.stderr
        assert "not enough space" in result.stderr
        assert "AUTO_REVIEW_CACHE_DIR" in result.stderr
        assert_nothing_published(cache)


@needs_root
def test_enospc_during_extraction_publishes_nothing(app: Path, tmp_path: Path) -> None:
    # Plenty of bytes but few inodes: the free-space check passes, creation hits ENOSPC.
    with tmpfs(tmp_path / "inodes", "size=512m,nr_inodes=120,mode=0700") as cache:
        result = run_app(app, "cache", "prepare", env=env_for(cache))
        assert result.returncode == 74, result.stderr
        assert "no space left" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert_nothing_published(cache)


def payload_offset(app: Path) -> tuple[int, int]:
    """(offset, size) of the stored payload's bytes inside the single file."""
    with zipfile.ZipFile(app) as zf:
        info = zf.getinfo(PAYLOAD)
    with open(app, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len = int.from_bytes(fh.read(2), "little")
        extra_len = int.from_bytes(fh.read(2), "little")
    # header_offset is relative to the zip start, which follows the shebang line
    shebang = app.read_bytes().index(b"PK\x03\x04")
    return shebang + info.header_offset + 30 + name_len + extra_len, info.file_size


@pytest.mark.parametrize("where", [0.001, 0.5, 0.999])
def test_one_flipped_byte_is_refused_before_publishing(
    app: Path, tmp_path: Path, where: float
) -> None:
    bad = tmp_path / "auto-review"
    shutil.copy(app, bad)
    offset, size = payload_offset(bad)
    data = bytearray(bad.read_bytes())
    data[offset + int(size * where)] ^= 0x40
    bad.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    result = run_app(bad, "cache", "prepare", env=env_for(cache))
    assert result.returncode == 65, result.stderr
    assert "damaged" in result.stderr or "digest" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert_nothing_published(cache)


@pytest.mark.parametrize("damage", ["signature", "extra length"])
def test_a_damaged_local_header_of_the_payload_is_refused(
    app: Path, tmp_path: Path, damage: str
) -> None:
    """The payload is read at the offset its zip local header gives (not through
    zipfile's reader): a header that is not one, or one whose extra field moves the
    data's start, is one line and exit 65, and nothing is published."""
    bad = tmp_path / "auto-review"
    shutil.copy(app, bad)
    with zipfile.ZipFile(bad) as zf:
        header = zf.getinfo(PAYLOAD).header_offset
    data = bytearray(bad.read_bytes())
    if damage == "signature":
        data[header : header + 4] = b"PK\x07\x08"
    else:  # the data would start 64 KiB into the payload: decoding refuses it
        data[header + 28 : header + 30] = (0xFFFF).to_bytes(2, "little")
    bad.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    result = run_app(bad, "cache", "prepare", env=env_for(cache))
    assert result.returncode == 65, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert_nothing_published(cache)


SPAN = """
import hashlib, os, sys
sys.path.insert(0, sys.argv[1])
from launcher import embedded
embedded.archive_path = lambda: sys.argv[2]
fd, offset, size = embedded.payload_span(int(sys.argv[3]))
data = os.pread(fd, size, offset)
print(offset, "sha256:" + hashlib.sha256(data).hexdigest(), "zipfile" in sys.modules)
"""


def payload_span_of(app: Path, size: int) -> tuple[int, str, bool]:
    """embedded.payload_span() in a fresh interpreter: (offset, sha256 of the span it
    names, whether zipfile was imported to find it)."""
    out = subprocess.run([HOST_PYTHON, "-I", "-S", "-c", SPAN, str(ROOT), str(app), str(size)],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return int(out[0]), out[1], out[2] == "True"


def test_the_payload_is_found_without_zipfile_and_through_it_when_moved(
    app: Path, tmp_path: Path
) -> None:
    """The build writes the payload first: its span is found with one pread, zipfile not
    imported. The same file rewritten with the payload last (another zip tool) and one
    whose first local header gives another size are read through the directory."""
    manifest = json.loads(run_app(app, "bundle", "info", "--json", check=True).stdout)
    size, digest = manifest["compressed_size"], manifest["digest"]
    offset, got, used_zipfile = payload_span_of(app, size)
    assert (got, used_zipfile) == (digest, False)
    moved = tmp_path / "moved"
    with zipfile.ZipFile(app) as src, open(moved, "wb") as fh:
        fh.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(fh, "w") as dst:
            for info in [*src.infolist()[1:], src.infolist()[0]]:
                dst.writestr(info, src.read(info))
    moved_offset, got, used_zipfile = payload_span_of(moved, size)
    assert (got, used_zipfile) == (digest, True) and moved_offset != offset
    assert run_app(moved, "cache", "prepare", env=env_for(tmp_path / "cache")).returncode == 0
    # a first member whose header says another size than the manifest: not trusted
    _offset, got, used_zipfile = payload_span_of(app, size - 1)
    assert used_zipfile


LISTED = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
from launcher import embedded
from launcher.errors import PayloadCorrupt
embedded.archive_path = lambda: sys.argv[2]
try:
    data = embedded.read_listed_member("bundle/files.tsv", int(sys.argv[3]), int(sys.argv[4]))
    print("sha256:" + hashlib.sha256(data).hexdigest(), "zipfile" in sys.modules)
except PayloadCorrupt as exc:
    print(exc.message.replace(" ", "_"), "zipfile" in sys.modules)
"""


def listed_member_of(app: Path, size: int, cap: int = 8 << 20) -> tuple[str, bool]:
    """embedded.read_listed_member() of bundle/files.tsv in a fresh interpreter: (its
    sha256, or the refusal, and whether zipfile was imported to read it)."""
    args = [HOST_PYTHON, "-I", "-S", "-c", LISTED, str(ROOT), str(app), str(size), str(cap)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    return out[0], out[1] == "True"


def test_the_file_list_is_found_past_the_payload_and_through_the_directory_elsewhere(
    app: Path, tmp_path: Path
) -> None:
    """The build stores bundle/files.tsv right after the payload: a cold start reads it
    with one pread and never imports zipfile (nor pathlib, shutil, urllib with it). The
    same file with the list moved, or with zip64 sizes (other zip tools), is read
    through the directory, where the cap holds before any byte is read too. A list
    compressed (zipfile would inflate up to 2 GiB of it whatever the directory says)
    or, moved, there twice (zipfile reads the last, a size check the first) is refused
    with one line."""
    import warnings

    manifest = json.loads(run_app(app, "bundle", "info", "--json", check=True).stdout)
    size, want = manifest["compressed_size"], manifest["files_digest"]
    assert listed_member_of(app, size) == (want, False)
    over = listed_member_of(app, size, cap=1000)
    assert over[0].startswith("bundle/files.tsv_of_") and "over_the_cap" in over[0]
    for how in ("moved", "zip64", "deflated", "twice"):
        other = tmp_path / how
        with zipfile.ZipFile(app) as src, open(other, "wb") as fh:
            fh.write(b"#!/usr/bin/env python3\n")
            with zipfile.ZipFile(fh, "w") as dst, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # zipfile's "Duplicate name"
                infos = src.infolist()
                if how in ("moved", "twice"):  # the list first, the payload after it
                    infos = [infos[1], infos[0], *infos[2:]]
                for info in infos:
                    data = src.read(info.filename)
                    if info.filename == "bundle/files.tsv" and how == "deflated":
                        info = zipfile.ZipInfo(info.filename, info.date_time)
                        info.compress_type = zipfile.ZIP_DEFLATED
                    if info.filename == "bundle/files.tsv" and how == "zip64":
                        with dst.open(info, "w", force_zip64=True) as member:
                            member.write(data)  # its local header's sizes say 0xFFFFFFFF
                        continue
                    dst.writestr(info, data)
                    if info.filename == "bundle/files.tsv" and how == "twice":
                        dst.writestr(info, data.replace(b"\tusr/", b"\tetc/"))
        said, used_zipfile = listed_member_of(other, size)
        result = run_app(other, "cache", "prepare", env=env_for(tmp_path / f"cache-{how}"))
        if how in ("moved", "zip64"):
            assert (said, used_zipfile) == (want, True)
            assert "over_the_cap" in listed_member_of(other, size, cap=1000)[0]
            assert result.returncode == 0, result.stderr
            continue
        assert {"deflated": "not_stored_uncompressed", "twice": "has_2_members_named"}[how] in said
        assert result.returncode == 65, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert_nothing_published(tmp_path / f"cache-{how}")


LEAK = """
import os, sys
sys.path.insert(0, sys.argv[1])
from launcher import embedded
from launcher.errors import PayloadCorrupt
embedded.archive_path = lambda: sys.argv[2]
before = sorted(os.listdir("/proc/self/fd"))
try:
    embedded.payload_span(int(sys.argv[3]))
except PayloadCorrupt as exc:
    print(exc.message)
print(sorted(os.listdir("/proc/self/fd")) == before)
"""


def test_a_file_that_ends_inside_its_first_member_payload_leaks_no_fd(
    app: Path, tmp_path: Path
) -> None:
    """The payload's local header is found first, but the file was cut inside its data:
    payload_span says so and closes the single file it opened."""
    manifest = json.loads(run_app(app, "bundle", "info", "--json", check=True).stdout)
    cut = tmp_path / "cut"
    cut.write_bytes(app.read_bytes()[: manifest["compressed_size"] // 2])
    size = str(manifest["compressed_size"])
    args = [HOST_PYTHON, "-I", "-S", "-c", LEAK, str(ROOT), str(cut), size]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["the single file ends inside its payload", "True"]


def test_digest_mismatch_is_refused(app: Path, tmp_path: Path) -> None:
    """The payload is intact but the manifest names another digest: hashing must catch it."""
    bad = rewrite_app(
        app, tmp_path / "auto-review", edit_manifest=lambda m: m.update(digest="sha256:" + "0" * 64)
    )
    cache = tmp_path / "cache"
    result = run_app(bad, "cache", "prepare", env=env_for(cache))
    assert result.returncode == 65, result.stderr
    assert "does not match its manifest digest" in result.stderr
    assert_nothing_published(cache)


def test_symlinked_cache_root_is_refused(app: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    result = run_app(app, "cache", "prepare", env=env_for(link))
    assert result.returncode == 73
    assert "symlink" in result.stderr
    assert list(real.iterdir()) == []


def test_group_writable_cache_root_is_refused(app: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o777)
    result = run_app(app, "cache", "prepare", env=env_for(root))
    assert result.returncode == 73
    assert "chmod go-w" in result.stderr
    assert list(root.iterdir()) == []


@needs_root
def test_cache_root_of_another_owner_is_refused(app: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    result = run_app(app, "cache", "prepare", env=env_for(root))
    assert result.returncode == 73
    assert "owned by uid 65534" in result.stderr
    assert list(root.iterdir()) == []


@needs_root
def test_read_only_cache_is_an_error_with_a_hint(app: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=64m,mode=0700") as cache:
        result = run_app(app, "cache", "prepare", env=env_for(cache))
        assert result.returncode == 73, result.stderr
        assert "AUTO_REVIEW_CACHE_DIR" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def cpythons() -> list[str]:
    """CPython 3.10-3.13 interpreters on this machine (/usr/bin, PATH, pyenv)."""
    return [find_cpython(minor) or f"missing:python3.{minor}" for minor in (10, 11, 12, 13)]


@pytest.mark.parametrize("python", cpythons())
def test_launcher_runs_on_every_cpython(app: Path, tmp_path: Path, python: str) -> None:
    assert not python.startswith("missing:"), (
        f"{python[8:]} not installed: .ci/setup must provide it"
    )
    cache = tmp_path / "cache"
    env = env_for(cache)
    # -S: no site-packages, so nothing but the single file's own _vendor can be imported
    cmd = [python, "-S", str(app)]
    info = subprocess.run(
        [*cmd, "bundle", "info", "--json"], env=env, capture_output=True, text=True
    )
    assert info.returncode == 0, info.stderr
    prep = subprocess.run([*cmd, "cache", "prepare"], env=env, capture_output=True, text=True)
    assert prep.returncode == 0, prep.stderr
    assert "unpacked" in prep.stderr
    verify = subprocess.run([*cmd, "cache", "verify"], env=env, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # and as the file's first lines run it, without runpy
    _python3, *flags = preamble_command(app)
    booted = subprocess.run([python, *flags, str(app), "cache", "verify"], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert booted.returncode == 0, booted.stdout + booted.stderr


def test_warm_path_imports_nothing_heavy(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = env_for(cache, AUTO_REVIEW_STATE_DIR=str(tmp_path / "state"))
    run_app(app, "cache", "prepare", env=env, check=True)
    result = subprocess.run(
        [HOST_PYTHON, "-X", "importtime", str(app), "probe", "exit", "0"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line
    }
    assert "launcher.cache.warm" in imported  # the probe did see our imports
    heavy = {"filelock", "tarfile", "zstandard", "hashlib", "zipfile", "shutil", "argparse"}
    assert heavy & imported == set()


def test_default_cache_root_matches_platformdirs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import platformdirs

    from launcher.cache import root as layout

    monkeypatch.delenv("AUTO_REVIEW_CACHE_DIR", raising=False)
    for xdg in (None, str(tmp_path / "xdg")):
        if xdg is None:
            monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
            monkeypatch.delenv("XDG_STATE_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_CACHE_HOME", xdg)
            monkeypatch.setenv("XDG_STATE_HOME", xdg + "-state")
        assert layout.cache_root() == platformdirs.user_cache_dir("auto-review")
        assert layout.default_state_dir() == platformdirs.user_state_dir("auto-review")


def imported_from(app: Path, env: dict[str, str], python: str = HOST_PYTHON) -> str:
    """Where `launcher.cli.main` was loaded from on a warm start (python -v tells)."""
    result = subprocess.run([python, "-v", str(app), "probe", "exit", "0"], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [
        x
        for x in result.stderr.splitlines()
        if "/" in x
        and (
            "launcher.cli.main" in x
            or "/launcher/cli/__pycache__/main." in x
            or "/launcher/cli/main." in x
        )
    ]
    assert lines, "python -v did not report launcher.cli.main"
    return "\n".join(lines)


def test_launcher_code_is_cached_with_bytecode_and_only_if_private(
    app: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = env_for(cache, AUTO_REVIEW_STATE_DIR=str(tmp_path / "state"))
    python = other_cpython()  # the file carries no bytecode for it
    run_app(app, "cache", "prepare", env=env, check=True, python=python)
    [code] = [p for p in (cache / "v1" / "code").iterdir() if p.is_dir()]
    assert (code / ".complete").exists()
    assert str(code) in imported_from(app, env, python)
    with zipfile.ZipFile(code / "launcher.zip") as zf:  # bytecode beside each source
        names = set(zf.namelist())
    assert {"launcher/cli/main.py", "launcher/cli/main.pyc", "launcher/cache/warm.pyc"} <= names
    code.chmod(0o777)  # someone could have planted code: never import from it
    assert str(app) in imported_from(app, env, python)
    code.chmod(0o700)
    assert str(code) in imported_from(app, env, python)


def test_warm_start_imports_only_the_bootstrap_modules_from_the_zip(
    app: Path, tmp_path: Path
) -> None:
    """Under an interpreter the file has no bytecode for, zipimport compiles what it
    imports from the single file on every start: a warm start takes from it only what
    the bootstrap needs to find the cached code."""
    cache = tmp_path / "cache"
    env = env_for(cache, AUTO_REVIEW_STATE_DIR=str(tmp_path / "state"))
    python = other_cpython()
    run_app(app, "cache", "prepare", env=env, check=True, python=python)
    result = subprocess.run([python, "-v", str(app), "probe", "exit", "0"], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    where = {}
    for line in result.stderr.splitlines():
        if line.startswith("import 'launcher") and "zipimporter object" in line:
            where[line.split("'")[1]] = line.split('"')[1]
    from_zip = {name for name, path in where.items() if "/v1/code/" not in path}
    assert from_zip == {"launcher", "launcher.cache", "launcher.cache.root"}
    assert {"launcher.cli.main", "launcher.sandbox.run"} <= set(where)


def test_nothing_is_imported_from_a_code_dir_that_a_remover_holds(
    app: Path, tmp_path: Path
) -> None:
    """`cache clear` removes a code dir while it holds the dir's use lock exclusive. A
    launcher starting meanwhile must hold that lock shared before it imports anything
    from the dir: it imported three modules first, and when the removal won that race
    the start ended in a FileNotFoundError traceback. Busy, it runs from the zip."""
    import fcntl

    cache = tmp_path / "cache"
    env = env_for(cache, AUTO_REVIEW_LOCK_TIMEOUT="1")
    python = other_cpython()  # the file carries no bytecode for it: a code dir
    run_app(app, "cache", "prepare", env=env, check=True, python=python)
    [code_dir] = [p for p in (cache / "v1" / "code").iterdir() if p.is_dir()]
    fd = os.open(f"{code_dir}.use.lock", os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = subprocess.run([python, "-v", str(app), "cache", "prepare"], env=env,
                                capture_output=True, text=True)  # fmt: skip
    finally:
        os.close(fd)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("import 'launcher")]
    assert [line for line in lines if line.startswith("import 'launcher") and
            "/v1/code/" in line] == []  # fmt: skip


PREFER_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import launcher.cli.main, launcher.sandbox.run
from launcher.cache.root import forget, prefer

packages = {n: m for n, m in sys.modules.items()
            if n.startswith("launcher") and hasattr(m, "__path__")}
prefer("/nowhere/code")
first = {n: m.__path__[0] for n, m in packages.items()}
forget("/nowhere/code")
left = [n for n, m in packages.items() if any(p.startswith("/nowhere/") for p in m.__path__)]
print(json.dumps({"first": first, "left": left}))
"""


def test_prefer_puts_the_cached_code_first_in_every_imported_package() -> None:
    """A run that started from the zip and publishes its code later has imported
    subpackages (cli, sandbox) besides launcher and launcher.cache: prefer() patches
    them all, and forget() takes the code out of each again."""
    result = subprocess.run([HOST_PYTHON, "-I", "-c", PREFER_SCRIPT, str(ROOT)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    archive = "/nowhere/code/launcher.zip"
    assert out["first"] == {
        "launcher": f"{archive}/launcher",
        "launcher.cache": f"{archive}/launcher/cache",
        "launcher.cli": f"{archive}/launcher/cli",
        "launcher.sandbox": f"{archive}/launcher/sandbox",
    }
    assert out["left"] == []


def test_gc_sweeps_launcher_code_of_other_versions(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = env_for(cache)
    run_app(app, "cache", "prepare", env=env, check=True, python=other_cpython())
    [current] = [p for p in (cache / "v1" / "code").iterdir() if p.is_dir()]
    old = cache / "v1" / "code" / "0123456789abcdef0123"
    shutil.copytree(current, old)
    os.utime(current, (1, 1))  # the current one is kept whatever its age
    os.utime(old, (1, 1))
    result = run_app(app, "cache", "gc", env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (cache / "v1" / "code").iterdir() if p.is_dir()) == [current.name]


def test_the_threads_beside_the_decoder_yield_only_their_own_priority() -> None:
    """yield_cpu lowers the calling thread to nice 19 and leaves the process (the
    decoder, the writer) as it was: Linux keeps a nice value per thread."""
    import threading

    from launcher.cache.payload import yield_cpu

    before = os.getpriority(os.PRIO_PROCESS, 0)
    seen: list[int] = []

    def background() -> None:
        yield_cpu()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=background)
    thread.start()
    thread.join()
    assert seen == [19]
    assert (
        os.getpriority(os.PRIO_PROCESS, 0)
        == before
        == os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    )
