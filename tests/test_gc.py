"""Cache GC: what it removes, what it keeps, and that it never removes a version in use.

The current version is the real one, unpacked by the real single file. Older
versions are planted next to it: a small but complete version dir (bundle.json,
files.tsv, rootfs/, marker) whose age is its use lock's mtime, as the warm path
records it. One test builds a second real single file for the end-to-end path.
Processes that hold locks are real child processes using the launcher's own code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, build_app, run_app

from launcher.cache import gc
from launcher.cache.paths import Layout

DAY = 86400.0

# Holds a version's use lock the way a running instance does (launcher.cache.warm),
# then says whether the version was still published once the lock was held.
HOLD_USE_LOCK = """
import os, sys
from launcher.cache import locks
from launcher.cache.paths import Layout
layout = Layout(sys.argv[1])
fd = locks.hold(layout.use_lock(sys.argv[2]), shared=True)
print("locked" if os.path.exists(layout.marker(sys.argv[2])) else "gone", flush=True)
sys.stdin.read()
"""

# Holds any file's flock exclusive (.gc.lock, an extract lock).
HOLD_EXCLUSIVE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


class Holder:
    """A child process holding a lock until stop()."""

    def __init__(self, code: str, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )

    def status(self) -> str:
        """The child's first line: "locked" (or "gone"); blocks until it is written."""
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        """Let the child exit (closing stdin), releasing its lock."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self) -> None:
        assert self.proc.stdout is not None
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@contextlib.contextmanager
def holding(code: str, *args: str) -> Iterator[Holder]:
    """A Holder that has its lock for the duration of the block."""
    holder = Holder(code, *args)
    try:
        assert holder.status() == "locked"
        yield holder
    finally:
        holder.stop()
        holder.wait()


def plant_version(
    layout: Layout, label: str, *, age_days: float, like: dict, now: float | None = None
) -> str:
    """Publish a small complete version named `label`, last used `age_days` ago; its digest."""
    digest = "sha256:" + hashlib.sha256(label.encode()).hexdigest()
    vdir = Path(layout.version_dir(digest))
    rootfs = vdir / "rootfs"
    (rootfs / "usr" / "bin").mkdir(parents=True)
    data = f"payload of {label}\n".encode() * 100
    (rootfs / "usr" / "bin" / "tool").write_bytes(data)
    (rootfs / "usr" / "bin" / "tool").chmod(0o755)
    (rootfs / "bin").symlink_to("usr/bin")
    manifest = dict(like, digest=digest, version=label, unpacked_size=len(data))
    (vdir / "bundle.json").write_text(json.dumps(manifest))
    (vdir / "files.tsv").write_text(
        f"dir\t755\t0\t\tusr\ndir\t755\t0\t\tusr/bin\n"
        f"file\t755\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\tusr/bin/tool\n"
        f"symlink\t0\t0\tusr/bin\tbin\n"
    )
    (vdir / ".complete").touch(mode=0o400)
    set_last_used(layout, digest, age_days, now)
    return digest


def set_last_used(layout: Layout, digest: str, age_days: float, now: float | None = None) -> None:
    """Record a last use `age_days` ago on the version's use lock (creating it)."""
    lock = Path(layout.use_lock(digest))
    lock.touch(mode=0o600)
    when = (time.time() if now is None else now) - age_days * DAY
    os.utime(lock, (when, when))


def reasons(report: gc.GcReport) -> dict[str, str]:
    """digest -> reason, for every version the report kept."""
    return {item.digest: item.reason for item in report.kept if item.digest}


def removed(report: gc.GcReport) -> set[str]:
    return {item.digest for item in report.removed}


@pytest.fixture(scope="session")
def manifest(app: Path) -> dict:
    """The real single file's embedded manifest."""
    return json.loads(run_app(app, "bundle", "info", "--json", check=True).stdout)


@pytest.fixture
def layout(app: Path, cache_dir: Path, manifest: dict) -> Layout:
    """A cache holding the real version, unpacked by the real single file."""
    out = run_app(app, "cache", "prepare", check=True).stdout.strip()
    assert out == Layout(str(cache_dir)).version_dir(manifest["digest"])
    return Layout(str(cache_dir))


def test_gc_removes_a_stale_unpinned_version_and_keeps_current(
    layout: Layout, manifest: dict
) -> None:
    current = manifest["digest"]
    set_last_used(layout, current, age_days=100)  # old, yet current
    old = plant_version(layout, "0.0.1", age_days=30, like=manifest)
    recent = plant_version(layout, "0.0.2", age_days=1, like=manifest)
    size = sum(p.stat().st_size for p in Path(layout.version_dir(old)).rglob("*")
               if p.is_file() and not p.is_symlink())  # fmt: skip
    report = gc.collect(layout, current=current, keep=0, older_than_days=7)
    assert removed(report) == {old}
    assert reasons(report) == {current: "current", recent: "recent"}
    assert not os.path.lexists(layout.version_dir(old))
    assert not os.path.lexists(layout.use_lock(old))
    assert os.path.isdir(layout.rootfs(current)) and os.path.isdir(layout.rootfs(recent))
    assert report.freed == size > 1700
    assert not [n for n in os.listdir(layout.bundles) if n.startswith(".trash-")]


def test_gc_keeps_the_newest_keep_versions(layout: Layout, manifest: dict) -> None:
    current = manifest["digest"]
    ages = {f"0.0.{n}": 10.0 * n for n in range(1, 5)}
    digests = {label: plant_version(layout, label, age_days=age, like=manifest)
               for label, age in ages.items()}  # fmt: skip
    report = gc.collect(layout, current=current, keep=2)
    assert removed(report) == {digests["0.0.3"], digests["0.0.4"]}
    assert reasons(report) == {
        current: "current",
        digests["0.0.1"]: "within keep",
        digests["0.0.2"]: "within keep",
    }
    report = gc.collect(layout, current=current)  # default: one older version kept
    assert removed(report) == {digests["0.0.2"]}
    left = {name.split(".")[0] for name in os.listdir(layout.bundles)}  # dirs and their locks
    assert left == {layout.dirname(current), layout.dirname(digests["0.0.1"])}


def test_gc_honours_a_persistent_pin(app: Path, layout: Layout, manifest: dict) -> None:
    old = plant_version(layout, "0.0.1", age_days=30, like=manifest)
    assert run_app(app, "cache", "pin", "0.0.1").returncode == 0
    report = gc.collect(layout, current=manifest["digest"], keep=0, older_than_days=0)
    assert reasons(report)[old] == "pinned"
    assert os.path.isdir(layout.rootfs(old))
    assert run_app(app, "cache", "unpin", old[:19]).returncode == 0
    report = gc.collect(layout, current=manifest["digest"], keep=0, older_than_days=0)
    assert removed(report) == {old}


def test_gc_honours_an_env_pin(
    layout: Layout, manifest: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = plant_version(layout, "0.0.1", age_days=30, like=manifest)
    other = plant_version(layout, "0.0.2", age_days=30, like=manifest)
    monkeypatch.setenv("AUTO_REVIEW_BUNDLE", old.split(":")[1][:12])
    report = gc.collect(layout, current=manifest["digest"], keep=0, older_than_days=0)
    assert reasons(report)[old] == "pinned by AUTO_REVIEW_BUNDLE"
    assert removed(report) == {other}
    monkeypatch.setenv("AUTO_REVIEW_BUNDLE", "no-such-version")  # unresolvable: pins nothing
    report = gc.collect(layout, current=manifest["digest"], keep=0, older_than_days=0)
    assert removed(report) == {old}


def test_gc_keeps_a_version_in_use_even_when_not_current(layout: Layout, manifest: dict) -> None:
    digest = manifest["digest"]
    set_last_used(layout, digest, age_days=30)
    with holding(HOLD_USE_LOCK, layout.root, digest):
        report = gc.collect(layout, current=None, keep=0)
        assert reasons(report) == {digest: "in use"}
        assert os.path.isdir(layout.rootfs(digest))
    report = gc.collect(layout, current=None, keep=0)
    assert removed(report) == {digest}
    assert not os.path.lexists(layout.version_dir(digest))


def test_gc_never_removes_a_version_held_by_a_running_process(
    layout: Layout, manifest: dict
) -> None:
    """Many rounds of a holder starting and stopping while GC runs, in every ordering."""
    current = manifest["digest"]
    label = "0.0.1"
    digest = "sha256:" + hashlib.sha256(label.encode()).hexdigest()
    held_and_kept = removed_when_free = lost_the_race = 0
    for rnd in range(60):
        if not os.path.lexists(layout.version_dir(digest)):
            plant_version(layout, label, age_days=30, like=manifest)
        set_last_used(layout, digest, age_days=30)
        holder = Holder(HOLD_USE_LOCK, layout.root, digest)
        try:
            if rnd % 2 == 0:  # GC while the holder surely holds the lock
                status = holder.status()
                report = gc.collect(layout, current=current, keep=0, older_than_days=1)
            else:  # GC racing the holder's start
                report = gc.collect(layout, current=current, keep=0, older_than_days=1)
                status = holder.status()
            if status == "locked":
                report = gc.collect(layout, current=current, keep=0, older_than_days=1)
                assert digest not in removed(report), f"round {rnd}: removed while held"
                assert os.path.isfile(os.path.join(layout.rootfs(digest), "usr/bin/tool"))
                assert reasons(report)[digest] == "in use"
                held_and_kept += 1
            else:
                assert status == "gone", status
                assert not os.path.lexists(layout.version_dir(digest))
                lost_the_race += 1
            holder.stop()
            if status == "locked" and rnd % 3 == 0:  # GC racing the holder's exit: any outcome
                report = gc.collect(layout, current=current, keep=0, older_than_days=1)
                present = os.path.lexists(layout.version_dir(digest))
                assert present == (digest not in removed(report))
                removed_when_free += not present
        finally:
            holder.stop()
            holder.wait()
        report = gc.collect(layout, current=current, keep=0, older_than_days=1)
        if digest in removed(report):
            removed_when_free += 1
        assert not os.path.lexists(layout.version_dir(digest))
        assert os.path.isdir(layout.rootfs(current))
    assert held_and_kept >= 30
    assert removed_when_free + lost_the_race >= 30


def test_gc_is_skipped_while_another_gc_runs(layout: Layout, manifest: dict) -> None:
    old = plant_version(layout, "0.0.1", age_days=30, like=manifest)
    trash = Path(layout.bundles, ".trash-sha256-00-1")
    trash.mkdir()
    with holding(HOLD_EXCLUSIVE, layout.gc_lock):
        report = gc.collect(layout, current=manifest["digest"], keep=0)
        assert report.skipped
        assert not report.removed and not report.kept and not report.leftovers
        assert os.path.isdir(layout.rootfs(old)) and trash.is_dir()
    report = gc.collect(layout, current=manifest["digest"], keep=0)
    assert not report.skipped
    assert removed(report) == {old}
    assert not trash.exists()


def test_gc_removes_leftover_trash_stale_work_dirs_and_orphan_locks(
    layout: Layout, tmp_path: Path
) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "precious").write_text("keep me")
    trash = Path(layout.bundles, ".trash-sha256-ab-123")
    (trash / "rootfs" / "etc").mkdir(parents=True)
    (trash / "rootfs" / "etc" / "file").write_text("x" * 1000)
    (trash / "rootfs" / "escape").symlink_to(sentinel)
    stale_hex, busy_hex, orphan_hex = (hashlib.sha256(s).hexdigest() for s in (b"a", b"b", b"c"))
    stale = Path(layout.bundles, f".tmp-sha256-{stale_hex}-x1y2z3")
    (stale / "rootfs").mkdir(parents=True)
    (stale / "rootfs" / "half-written").write_bytes(b"y" * 500)
    busy = Path(layout.bundles, f".tmp-sha256-{busy_hex}-a1b2c3")
    (busy / "rootfs").mkdir(parents=True)
    orphan_locks = [
        Path(layout.bundles, f"sha256-{orphan_hex}.{k}.lock") for k in ("use", "extract")
    ]
    for lock in orphan_locks:
        lock.touch()
    foreign = Path(layout.bundles, "notes.txt")
    foreign.write_text("not ours")
    busy_lock = Path(layout.bundles, f"sha256-{busy_hex}.extract.lock")
    with holding(HOLD_EXCLUSIVE, str(busy_lock)):
        report = gc.collect(layout, current=None, keep=5)
    assert not trash.exists() and not stale.exists()
    assert busy.is_dir() and foreign.is_file()
    assert not any(lock.exists() for lock in orphan_locks)
    assert (sentinel / "precious").read_text() == "keep me"
    left = {item.name: item.reason for item in report.leftovers}
    assert left[trash.name] == "leftover trash" and left[stale.name] == "stale work dir"
    assert {item.name: item.reason for item in report.kept}[busy.name].startswith("in use")
    assert report.freed == 1500
    gc.collect(layout, current=None, keep=5)
    assert not busy.exists()


def test_gc_never_follows_symlinks(layout: Layout, manifest: dict, tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "precious").write_text("keep me")
    (sentinel / "sub" / "also").write_text("keep me too")
    evil = plant_version(layout, "0.0.6", age_days=30, like=manifest)
    rootfs = Path(layout.rootfs(evil))
    (rootfs / "escape-dir").symlink_to(sentinel)
    (rootfs / "escape-file").symlink_to(sentinel / "precious")
    (rootfs / "usr" / "lib").symlink_to(sentinel / "sub")
    # A version dir that is itself a symlink to a complete-looking dir outside the cache.
    outside = tmp_path / "outside"
    shutil.copytree(layout.version_dir(evil), outside, symlinks=True)
    linked = "sha256:" + hashlib.sha256(b"0.0.7").hexdigest()
    bundle = json.loads((outside / "bundle.json").read_text())
    (outside / "bundle.json").write_text(json.dumps(dict(bundle, digest=linked, version="0.0.7")))
    os.symlink(outside, layout.version_dir(linked))
    set_last_used(layout, linked, age_days=30)
    before = sorted(str(p) for p in tmp_path.rglob("*") if "cache" not in p.parts)

    report = gc.collect(layout, current=manifest["digest"], keep=0)

    # The symlink is no version of ours (never trusted, never listed): swept as a leftover.
    assert removed(report) == {evil}
    assert layout.dirname(linked) in [item.name for item in report.leftovers]
    assert not os.path.lexists(layout.version_dir(evil))
    assert not os.path.lexists(layout.version_dir(linked))
    assert (sentinel / "precious").read_text() == "keep me"
    assert (sentinel / "sub" / "also").read_text() == "keep me too"
    assert (outside / "rootfs" / "usr" / "bin" / "tool").is_file()
    assert sorted(str(p) for p in tmp_path.rglob("*") if "cache" not in p.parts) == before
    assert os.path.isdir(layout.rootfs(manifest["digest"]))


def test_gc_dry_run_removes_nothing(layout: Layout, manifest: dict) -> None:
    old = plant_version(layout, "0.0.1", age_days=30, like=manifest)
    Path(layout.bundles, ".trash-sha256-00-1").mkdir()
    before = sorted(os.listdir(layout.bundles))
    report = gc.collect(layout, current=manifest["digest"], keep=0, dry_run=True)
    assert removed(report) == {old}
    assert [item.name for item in report.leftovers] == [".trash-sha256-00-1"]
    assert sorted(os.listdir(layout.bundles)) == before


def test_gc_older_than_is_measured_from_now(layout: Layout, manifest: dict) -> None:
    now = time.time()
    old = plant_version(layout, "0.0.1", age_days=3, like=manifest, now=now)
    report = gc.collect(layout, current=manifest["digest"], keep=0, older_than_days=7, now=now)
    assert reasons(report)[old] == "recent"
    later = now + 5 * DAY
    report = gc.collect(layout, current=manifest["digest"], keep=0, older_than_days=7, now=later)
    assert removed(report) == {old}
    assert report.removed[0].reason == "unused for 8.0 days"


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def app_v2(app: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second real single file (0.0.9) whose rootfs differs by one file, so its digest differs."""
    work = tmp_path_factory.mktemp("v2")
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(work / "cache"))
    vdir = run_app(app, "cache", "prepare", env=env, check=True).stdout.strip()
    rootfs = work / "rootfs"
    shutil.copytree(Path(vdir, "rootfs"), rootfs, symlinks=True)
    (rootfs / "etc").chmod(0o755)
    (rootfs / "etc" / "auto-review-test-v2").write_text("second version\n")
    return build_app(work / "auto-review-0.0.9", "--rootfs", str(rootfs), "--version", "0.0.9",
                     level=1)  # fmt: skip


def test_real_versions_cold_unpack_gc_and_cache_gc(
    app: Path, app_v2: Path, layout: Layout, manifest: dict
) -> None:
    v1 = manifest["digest"]
    ancient = plant_version(layout, "0.0.1", age_days=60, like=manifest)
    set_last_used(layout, v1, age_days=20)

    # The cold unpack of 0.0.9 runs GC: v1 is the one older version kept, ancient goes.
    out = run_app(app_v2, "cache", "prepare", check=True).stdout.strip()
    v2 = "sha256:" + Path(out).name.removeprefix("sha256-")
    assert v2 != v1 and Path(out, ".complete").exists()
    assert not os.path.lexists(layout.version_dir(ancient))
    assert os.path.isdir(layout.rootfs(v1))

    set_last_used(layout, v2, age_days=10)
    pinned = dict(os.environ, AUTO_REVIEW_BUNDLE="0.0.9")
    result = run_app(app, "cache", "gc", "--keep", "0", env=pinned)
    assert result.returncode == 0, result.stderr
    assert "kept 0.0.9" in result.stdout and "pinned by AUTO_REVIEW_BUNDLE" in result.stdout

    result = run_app(app, "cache", "gc", "--keep", "0", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"would remove 0.0.9 ({v2[:19]})" in result.stdout
    assert os.path.isdir(layout.rootfs(v2))

    result = run_app(app, "cache", "gc", "--keep", "0")
    assert result.returncode == 0, result.stderr
    assert f"removed 0.0.9 ({v2[:19]})" in result.stdout
    assert f"kept {manifest['version']} ({v1[:19]}): current" in result.stdout
    assert "freed" in result.stdout
    assert not os.path.lexists(layout.version_dir(v2))
    assert os.path.isdir(layout.rootfs(v1))


def test_cache_gc_reports_busy_and_bad_options(app: Path, layout: Layout) -> None:
    with holding(HOLD_EXCLUSIVE, layout.gc_lock):
        result = run_app(app, "cache", "gc")
    assert result.returncode == 75
    assert "another cache gc or clear is running" in result.stderr
    result = run_app(app, "cache", "gc", "--keep", "-1")
    assert result.returncode == 2 and "--keep" in result.stderr


def test_gc_keeps_a_version_whose_manifest_names_another_digest(
    layout: Layout, manifest: dict
) -> None:
    old = plant_version(layout, "0.0.1", age_days=30, like=manifest)
    other = "sha256:" + hashlib.sha256(b"elsewhere").hexdigest()
    bundle = Path(layout.version_dir(old), "bundle.json")
    bundle.write_text(json.dumps(dict(json.loads(bundle.read_text()), digest=other)))
    set_last_used(layout, other, age_days=30)
    report = gc.collect(layout, current=manifest["digest"], keep=0)
    assert other not in reasons(report)  # not a version at all: never acted on
    assert all(item.digest != old for item in report.removed)
    assert os.path.isdir(layout.rootfs(old))
