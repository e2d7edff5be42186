"""The cache tried as an attacker and a busy host would: every level checked before it is
trusted, every error one line with its exit code, labels that survive, locks that say
who holds them. Each test reproduces a finding of the cache-core issue."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard
from conftest import (
    HOST_PYTHON,
    app_vouching_for,
    build_app,
    needs_root,
    other_cpython,
    rewrite_app,
    run_app,
    without_host_libzstd,
)
from test_cache import assert_nothing_published, bundles, env_for, published, tmpfs

PLANTER = 65534  # nobody: the other user who plants


def manifest_of(app: Path) -> dict:
    return json.loads(run_app(app, "bundle", "info", "--json", check=True).stdout)


def owned_by_us(tree: Path) -> list[Path]:
    """Entries under `tree` owned by the test's uid (what the launcher would have created)."""
    return [p for p in [tree, *tree.rglob("*")] if p.lstat().st_uid == os.geteuid()]


def plant_version(where: Path, digest: str, source: Path) -> None:
    """A complete-looking version dir for `digest` under `where`, owned by the planter."""
    vdir = where / digest.replace(":", "-", 1)
    shutil.copytree(source, vdir, symlinks=True)
    (vdir / "rootfs" / "PLANTED").write_text("the planter's gateway\n")
    for p in [where, *where.rglob("*")]:
        os.lchown(p, PLANTER, PLANTER)


@needs_root
@pytest.mark.parametrize("how", ["world-writable v1", "v1 of another owner"])
def test_a_planted_version_is_never_run(app: Path, tmp_path: Path, how: str) -> None:
    cache = tmp_path / "cache"
    env = env_for(cache, AUTO_REVIEW_STATE_DIR=str(tmp_path / "state"))
    run_app(app, "cache", "prepare", env=env, check=True)
    digest = manifest_of(app)["digest"]
    [real] = published(cache)
    cache.chmod(0o755)  # traversable, not writable: the root itself passes its check
    v1 = cache / "v1"
    if how == "world-writable v1":
        v1.chmod(0o777)
    else:
        os.chown(v1, PLANTER, PLANTER)
    # What the other user can now do: swap bundles/ for one of theirs.
    os.rename(bundles(cache), v1 / "old-bundles")
    planted = bundles(cache)
    planted.mkdir()
    plant_version(planted, digest, v1 / "old-bundles" / real.name)

    for args in (("cache", "prepare"), ("check",), ("cache", "list")):
        result = run_app(app, *args, env=env)
        assert result.returncode == 73, (args, result.stdout, result.stderr)
        assert str(v1) in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert owned_by_us(planted) == [], "nothing may be created in the planter's directory"


@needs_root
def test_a_symlinked_bundles_dir_creates_nothing_where_it_points(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = env_for(cache)
    run_app(app, "cache", "prepare", env=env, check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    os.chown(elsewhere, PLANTER, PLANTER)
    shutil.rmtree(bundles(cache))
    bundles(cache).symlink_to(elsewhere)
    result = run_app(app, "cache", "prepare", env=env)
    assert result.returncode == 73, result.stderr
    assert "symlink" in result.stderr
    assert list(elsewhere.iterdir()) == []


@needs_root
def test_a_relative_cache_dir_runs_the_sandbox(app: Path, tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    env = env_for(Path("rel/cache"), AUTO_REVIEW_STATE_DIR="rel/state")
    path = subprocess.run([HOST_PYTHON, str(app), "cache", "path"], env=env, cwd=tmp_path / "work",
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert path.stdout.strip() == str(tmp_path / "work" / "rel" / "cache")
    result = subprocess.run([HOST_PYTHON, str(app), "check"], env=env, cwd=tmp_path / "work",
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert published(tmp_path / "work" / "rel" / "cache")


@needs_root
def test_a_full_disk_when_the_root_is_created_is_no_space(app: Path, tmp_path: Path) -> None:
    # Few inodes, all used: creating the cache root's first directory fails with ENOSPC.
    with tmpfs(tmp_path / "full", "size=4m,nr_inodes=4,mode=0755") as disk:
        n = 0
        while True:
            try:
                (disk / f"f{n}").touch()
            except OSError:
                break
            n += 1
        result = run_app(app, "cache", "prepare", env=env_for(disk / "a" / "cache"))
        assert result.returncode == 74, result.stderr
        assert "no space left" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@needs_root
def test_a_noexec_cache_is_refused_with_the_fix(app: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "noexec", "size=256m,noexec,mode=0700") as cache:
        result = run_app(app, "cache", "prepare", env=env_for(cache))
        assert result.returncode == 71, result.stderr
        assert "noexec" in result.stderr and "AUTO_REVIEW_CACHE_DIR" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr
        assert_nothing_published(cache)


@pytest.mark.parametrize("policy", ["cffi", "rust", "cffi_fallback", "bogus"])
@needs_root
def test_no_zstandard_variable_chooses_the_backend(app: Path, tmp_path: Path, policy: str) -> None:
    """zstandard is used on a host without libzstd: its environment variable is ignored."""
    cache = tmp_path / "cache"
    env = env_for(cache, PYTHON_ZSTANDARD_IMPORT_POLICY=policy)
    result = run_app(app, "cache", "prepare", env=env, prefix=without_host_libzstd())
    assert result.returncode == 0, result.stderr
    [version] = published(cache)
    assert (version / ".complete").exists()


def tar_with(members: list[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar whose members are (name, data), the first one absolute."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_an_early_refusal_of_a_matching_payload_says_only_what_is_known(
    app: Path, tmp_path: Path
) -> None:
    # A payload refused at its first member, with the rest after it: the digest is right.
    tail = os.urandom(256 << 10)
    payload = zstandard.ZstdCompressor().compress(
        tar_with([("/etc/evil", b"x"), ("usr/big", tail)])
    )
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    bad = rewrite_app(
        app,
        tmp_path / "auto-review",
        payload=payload,
        edit_manifest=lambda m: m.update(digest=digest, compressed_size=len(payload)),
    )
    cache = tmp_path / "cache"
    result = run_app(bad, "cache", "prepare", env=env_for(cache))
    assert result.returncode == 65, result.stderr
    assert "absolute path" in result.stderr
    assert "does not match its digest" not in result.stderr
    assert "matches its digest" in result.stderr
    assert_nothing_published(cache)


def test_an_early_refusal_of_a_changed_payload_says_it_does_not_match(
    app: Path, tmp_path: Path
) -> None:
    payload = zstandard.ZstdCompressor().compress(tar_with([("/etc/evil", b"x")]))
    bad = rewrite_app(app, tmp_path / "auto-review", payload=payload)
    result = run_app(bad, "cache", "prepare", env=env_for(tmp_path / "cache"))
    assert result.returncode == 65, result.stderr
    assert "absolute path" in result.stderr
    assert "does not match its digest" in result.stderr


@pytest.fixture(scope="module")
def relabelled_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same sources built as 0.1.0 and as 0.2.0: one payload digest, two labels
    (built here, whatever AUTO_REVIEW_TEST_APP names)."""
    base = tmp_path_factory.mktemp("relabelled")
    first = build_app(base / "a" / "auto-review", "--version", "0.1.0")
    return first, build_app(base / "b" / "auto-review", "--version", "0.2.0")


def test_a_label_resolves_whichever_file_unpacked_its_digest(
    relabelled_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    app, relabelled = relabelled_pair
    assert manifest_of(relabelled)["digest"] == manifest_of(app)["digest"]
    cache = tmp_path / "cache"
    env = env_for(cache)
    run_app(app, "cache", "prepare", env=env, check=True)  # 0.1.0 unpacks first
    for file in (relabelled, app):
        pinned = run_app(file, "cache", "prepare", env=dict(env, AUTO_REVIEW_BUNDLE="0.2.0"))
        assert pinned.returncode == 0, pinned.stderr
    pin = run_app(relabelled, "cache", "pin", "0.2.0", env=env)
    assert pin.returncode == 0, pin.stderr
    rows = json.loads(run_app(app, "cache", "list", "--json", env=env, check=True).stdout)
    assert [row["labels"] for row in rows] == [["0.1.0", "0.2.0"]]
    assert rows[0]["pinned"] is True
    # ...and the 0.1.0 file finds the version by the other file's label
    unpin = run_app(app, "cache", "unpin", "0.2.0", env=env)
    assert unpin.returncode == 0, unpin.stderr


HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_hung_unpacker_is_named_and_waited_for_only_so_long(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = env_for(cache, AUTO_REVIEW_LOCK_TIMEOUT="1")
    run_app(app, "cache", "path", env=env, check=True)
    bundles(cache).mkdir(parents=True, mode=0o700)
    for level in (cache, cache / "v1"):
        level.chmod(0o700)
    lock = bundles(cache) / (manifest_of(app)["digest"].replace(":", "-", 1) + ".extract.lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        result = run_app(app, "cache", "prepare", env=env)
    finally:
        holder.communicate("")
    assert result.returncode == 75, result.stderr
    lines = result.stderr.strip().splitlines()
    assert f"waiting for another auto-review (pid {holder.pid}) to finish unpacking" in lines[0]
    assert f"gave up after 1 s waiting for another auto-review (pid {holder.pid})" in lines[-1]
    assert "AUTO_REVIEW_LOCK_TIMEOUT" in lines[-1]
    assert_nothing_published(cache)


def test_a_bad_lock_timeout_is_a_config_error(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run_app(app, "cache", "prepare", env=env_for(cache), check=True)
    lock = next(bundles(cache).glob("*.extract.lock"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        shutil.rmtree(published(cache)[0])
        result = run_app(app, "cache", "prepare", env=env_for(cache, AUTO_REVIEW_LOCK_TIMEOUT="x"))
    finally:
        holder.communicate("")
    assert result.returncode == 78, result.stderr
    assert "AUTO_REVIEW_LOCK_TIMEOUT" in result.stderr


@needs_root
def test_work_dirs_of_every_kind_left_by_a_kill_are_swept(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = env_for(cache)
    # without libzstd, so that a vendor dir is published too; under an interpreter the
    # file has no bytecode for, so that a code dir is too
    run_app(app, "cache", "prepare", env=env, check=True, prefix=without_host_libzstd(),
            python=other_cpython())  # fmt: skip
    v1 = cache / "v1"
    [code] = [p for p in (v1 / "code").iterdir() if p.is_dir()]
    [vendor] = [p for p in (v1 / "vendor").iterdir() if p.is_dir()]
    leftovers = [
        v1 / "code" / f".tmp-{code.name}-abc123",
        v1 / "vendor" / f".tmp-{vendor.name}-abc123",
        v1 / "vendor" / f"{vendor.name}.tmp-999999999",  # the old launcher's naming
        v1 / "code" / f".trash-{code.name}-1",
    ]
    for path in leftovers:
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "file").write_bytes(b"x" * 1000)
    result = run_app(app, "cache", "gc", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [p for p in leftovers if p.exists()] == []
    assert code.is_dir() and vendor.is_dir()


def test_global_flags_are_accepted_after_the_verb(app: Path, tmp_path: Path) -> None:
    env = env_for(tmp_path / "cache")
    result = run_app(app, "cache", "prepare", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert run_app(app, "cache", "list", "-q", "--json", env=env).returncode == 0


@needs_root
def test_clear_never_crashes_a_starting_launcher(app: Path, tmp_path: Path) -> None:
    """30 rounds of `cache prepare; cache clear & check`: 0 crashes, no traceback."""
    cache = tmp_path / "cache"
    env = env_for(cache, AUTO_REVIEW_STATE_DIR=str(tmp_path / "state"))
    for _round in range(30):
        run_app(app, "cache", "prepare", env=env, check=True)
        clear = subprocess.Popen(
            [HOST_PYTHON, str(app), "cache", "clear"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        start = run_app(app, "check", env=env, timeout=300)
        _out, err = clear.communicate(timeout=120)
        assert start.returncode == 0, start.stdout + start.stderr
        assert clear.returncode in (0, 75), err
        assert "Traceback" not in start.stderr + err


def test_the_build_file_list_is_authenticated_and_must_match_the_payload(
    app: Path, tmp_path: Path
) -> None:
    import zipfile

    with zipfile.ZipFile(app) as zf:
        listed = zf.read("bundle/files.tsv").decode()
    lines = listed.splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if line.startswith("file\t"))
    kind, mode, size, digest, path = lines[i].split("\t", 4)
    # a changed digest: the list no longer matches the manifest's files_digest
    lines[i] = "\t".join((kind, mode, size, "0" * 64, path))
    forged = "".join(lines).encode()
    bad = rewrite_app(app, tmp_path / "a1", members={"bundle/files.tsv": forged})
    result = run_app(bad, "cache", "prepare", env=env_for(tmp_path / "c1"))
    assert result.returncode == 65, result.stderr
    assert "bundle/files.tsv does not match its manifest digest" in result.stderr
    assert_nothing_published(tmp_path / "c1")
    # a list that the manifest vouches for but that is not what the payload holds
    lines[i] = "\t".join((kind, "700", size, digest, path))
    forged = "".join(lines).encode()
    bad = app_vouching_for(app, tmp_path / "a2", forged)
    result = run_app(bad, "cache", "prepare", env=env_for(tmp_path / "c2"))
    assert result.returncode == 65, result.stderr
    assert f"entry {path.strip()!r} differs from its file list" in result.stderr
    assert_nothing_published(tmp_path / "c2")


@needs_root
@pytest.mark.parametrize("how", ["group-writable parent", "world-writable grandparent"])
def test_a_root_others_could_swap_is_refused_and_its_code_never_imported(
    app: Path, tmp_path: Path, how: str
) -> None:
    top = tmp_path / "top"
    cache = top / "mid" / "cache"
    env = env_for(cache)
    python = other_cpython()  # an interpreter the file has no bytecode for: a code dir
    run_app(app, "cache", "prepare", env=env, check=True, python=python)  # code and version
    if how == "group-writable parent":
        subprocess.run(["groupadd", "-f", "ar-team"], check=True)
        shutil.chown(cache.parent, group="ar-team")
        cache.parent.chmod(0o2775)
    else:
        top.chmod(0o777)
    result = run_app(app, "cache", "prepare", env=env)
    assert result.returncode == 73, result.stderr
    assert "others can replace the cache" in result.stderr
    assert (cache / "v1" / "code").is_dir()
    verbose = subprocess.run([python, "-v", str(app), "--version"], env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert str(cache / "v1" / "code") not in verbose.stderr, "imported code from that cache"


def test_a_fifo_planted_as_a_lock_fails_fast_and_clear_removes_it(
    app: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = env_for(cache)
    run_app(app, "cache", "prepare", env=env, check=True)
    digest = manifest_of(app)["digest"].replace(":", "-", 1)
    lock = bundles(cache) / f"{digest}.use.lock"
    lock.unlink()
    os.mkfifo(lock)
    result = run_app(app, "cache", "prepare", env=env, timeout=60)
    assert result.returncode == 73, result.stderr
    assert "is not a regular file" in result.stderr and f"rm {lock}" in result.stderr
    cleared = run_app(app, "cache", "clear", env=env, timeout=60)
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    assert not os.path.lexists(lock)
    assert run_app(app, "cache", "prepare", env=env, timeout=120).returncode == 0


def test_a_planted_work_dir_with_an_absurd_pid_is_swept(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = env_for(cache)
    run_app(app, "cache", "prepare", env=env, check=True)
    planted = bundles(cache) / "x.tmp-99999999999999999999"
    planted.mkdir()
    result = run_app(app, "cache", "gc", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not planted.exists()


def test_an_existing_directory_as_the_root_is_not_tagged_for_backups(
    app: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "thesis.txt").write_text("keep me in backups\n")
    run_app(app, "cache", "prepare", env=env_for(home), check=True)
    assert not (home / "CACHEDIR.TAG").exists()
    assert (home / "v1" / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d")


def test_a_cache_dir_too_deep_to_create_is_one_line(app: Path, tmp_path: Path) -> None:
    deep = tmp_path / "deep" / ("a/" * 1200) / "cache"
    result = run_app(app, "cache", "prepare", env=env_for(deep))
    assert result.returncode == 73, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_verify_checks_the_file_list_against_the_manifest(app: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = env_for(cache)
    run_app(app, "cache", "prepare", env=env, check=True)
    [version] = published(cache)
    listed = version / "files.tsv"
    lines = listed.read_text().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if line.startswith("file\t"))
    kind, mode, size, _digest, path = lines[i].split("\t", 4)
    target = version / "rootfs" / path.strip()
    target.chmod(0o600)
    target.write_bytes(b"x" * int(size))  # content and list changed together
    lines[i] = "\t".join((kind, mode, size, hashlib.sha256(b"x" * int(size)).hexdigest(), path))
    listed.chmod(0o600)
    listed.write_text("".join(lines))
    target.chmod(int(mode, 8))
    result = run_app(app, "cache", "verify", env=env)
    assert result.returncode == 65, result.stdout + result.stderr
    assert "files.tsv does not match the manifest's files_digest" in result.stdout


def test_hostile_labels_and_manifests_in_the_cache_are_bounded_and_ignored(
    app: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = env_for(cache)
    run_app(app, "cache", "prepare", env=env, check=True)
    [version] = published(cache)
    # a labels file of 8 MiB: garbage, a label-shaped line past the read cap, control chars
    labels = bundles(cache) / f"{version.name}.labels"
    labels.write_bytes(b"\x1b[2J evil\n" + b"x" * (8 << 20) + b"\n9.9.9\n")
    # another version dir whose bundle.json is 4 MiB of JSON: never read whole, not listed
    other = bundles(cache) / ("sha256-" + "ab" * 32)
    shutil.copytree(version, other, symlinks=True)
    (other / "bundle.json").chmod(0o600)
    (other / "bundle.json").write_text('{"pad": "' + "y" * (4 << 20) + '"}')
    rows = json.loads(run_app(app, "cache", "list", "--json", env=env, check=True).stdout)
    assert [row["digest"] for row in rows] == [manifest_of(app)["digest"]]
    assert rows[0]["labels"] == [manifest_of(app)["version"]]
    pinned = run_app(app, "cache", "prepare", env=dict(env, AUTO_REVIEW_BUNDLE="9.9.9"))
    assert pinned.returncode == 66, pinned.stderr  # the label past the cap is not believed


@pytest.mark.parametrize("limit_mb", range(100, 260, 10))
def test_a_memory_limit_is_one_line_never_a_traceback_nor_half_a_cache(
    app: Path, tmp_path: Path, limit_mb: int
) -> None:
    """A cold start under an address-space limit (ulimit -v) from far too small to
    enough: below what it needs it fails where the memory runs out (an import, zipfile's
    directory, a thread that cannot start, a decoder that cannot map), which is one line
    and exit 71 (70 when it surfaced as another error), and a version is published whole
    or not at all."""
    cache = tmp_path / "cache"
    result = subprocess.run(
        ["prlimit", f"--as={limit_mb << 20}", HOST_PYTHON, str(app), "cache", "prepare"],
        env=env_for(cache), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        [version] = published(cache)
        assert (version / ".complete").exists()
        return
    [line] = result.stderr.strip().splitlines()
    if result.returncode == 71:
        assert line == (
            "auto-review: out of memory (a limit such as ulimit -v or a cgroup's memory.max"
            " was reached) -- raise it: a cold start needs about 64 MB of memory and 300 MB"
            " of address space"
        )
    else:  # memory that ran out in another thread can surface as anything (a module half
        # imported): one line that names the limit all the same
        assert result.returncode == 70, result.stderr
        assert line.startswith("auto-review: internal error (") and "ulimit -v" in line
    assert all((v / ".complete").exists() for v in published(cache) if not v.name.startswith("."))


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        ("ValueError('planted bug')", 70,
         "auto-review: internal error (ValueError: planted bug) -- if a memory limit is set"
         " (ulimit -v), raise it; otherwise report this line"),
        ("MemoryError()", 71, "auto-review: out of memory (a limit such as ulimit -v"),
        ("RuntimeError(\"can't start new thread\")", 71, "auto-review: out of memory ("),
    ],
)  # fmt: skip
def test_what_the_launcher_did_not_expect_is_one_line_never_a_traceback(
    app: Path, tmp_path: Path, raised: str, code: int, line: str
) -> None:
    """The bootstrap's last resort, reached for certain: a launcher module that raises
    what no handler expects (a bug), or memory and threads the OS refused."""
    planted = f"def prepare(quiet):\n    raise {raised}\n".encode()
    bad = rewrite_app(app, tmp_path / "auto-review", members={"launcher/cli/prepare.py": planted})
    result = run_app(bad, "cache", "prepare", env=env_for(tmp_path / "cache"))
    assert result.returncode == code, result.stderr
    [said] = result.stderr.strip().splitlines()
    assert said.startswith(line), said
