"""What a user sees: progress on a terminal (and silence elsewhere), --verbose, and a
payload whose zstd window would need more memory than we allow."""

from __future__ import annotations

import hashlib
import io
import os
import pty
import re
import select
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard
from conftest import (
    HOST_PYTHON,
    ROOT,
    legacy_v07_frame,
    needs_root,
    rewrite_app,
    run_app,
    run_app_measured,
    without_host_libzstd,
)


def env_for(cache: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache), **extra)
    env.pop("AUTO_REVIEW_BUNDLE", None)
    return env


def run_on_tty(app: Path, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal; returns (exit code, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([HOST_PYTHON, str(app), *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave)  # fmt: skip
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(timeout=60), shown.decode(errors="replace")


def test_cold_unpack_shows_progress_on_a_terminal(app: Path, tmp_path: Path) -> None:
    code, shown = run_on_tty(app, "cache", "prepare", env=env_for(tmp_path / "cache"))
    assert code == 0
    assert "unpacking" in shown and "MB/s" in shown and "ETA" in shown
    assert "[########################]" in shown  # the final draw is complete


def test_quiet_and_non_terminal_runs_show_no_progress(app: Path, tmp_path: Path) -> None:
    code, shown = run_on_tty(app, "-q", "cache", "prepare", env=env_for(tmp_path / "a"))
    assert code == 0
    assert "MB/s" not in shown
    piped = run_app(app, "cache", "prepare", env=env_for(tmp_path / "b"))
    assert piped.returncode == 0
    assert "MB/s" not in piped.stderr


def test_verbose_names_the_runtime_and_why(app: Path, tmp_path: Path) -> None:
    env = env_for(tmp_path / "cache", AUTO_REVIEW_STATE_DIR=str(tmp_path / "state"))
    result = run_app(app, "-v", "probe", "exit", "0", env=env)
    assert result.returncode == 0, result.stderr
    # the real name and version of what discovery picked (runc, or crun where it works)
    assert re.search(r"runtime (runc|crun) \S+ at /\S+ \(first usable on PATH", result.stderr)
    assert ("rootless" if os.geteuid() else "; root;") in result.stderr


def test_help_names_the_host_files_the_launcher_reads(app: Path) -> None:
    result = run_app(app, "--help")
    assert result.returncode == 0
    assert "AUTO_REVIEW_CA_FILE" in result.stdout
    assert "GITHUB_APP_PRIVATE_KEY_FILE" in result.stdout


def with_payload(app: Path, out: Path, payload: bytes) -> Path:
    """A copy of the single file with another payload, its digest and size in the manifest."""

    def edit(manifest: dict) -> None:
        manifest["digest"] = "sha256:" + hashlib.sha256(payload).hexdigest()
        manifest["compressed_size"] = len(payload)

    return rewrite_app(app, out, payload=payload, edit_manifest=edit)


@pytest.mark.parametrize("decoder", ["host", pytest.param("vendored", marks=needs_root)])
def test_a_zstd_window_over_the_cap_is_refused(app: Path, tmp_path: Path, decoder: str) -> None:
    """A payload that matches its (edited) digest but asks for a 128 MiB window, decoded
    by the host's libzstd or (on a host without it) the vendored zstandard: exit 65, one
    line, nothing published, the peak RSS under the 64 MB bound."""
    with zipfile.ZipFile(app) as zf:
        tar = (
            zstandard.ZstdDecompressor()
            .stream_reader(io.BytesIO(zf.read("bundle/rootfs.tar.zst")))
            .read()
        )
    params = zstandard.ZstdCompressionParameters.from_level(
        1, window_log=27, write_content_size=False
    )
    bomb = zstandard.ZstdCompressor(compression_params=params).compress(tar)
    bad = with_payload(app, tmp_path / "auto-review", bomb)
    cache = tmp_path / "cache"
    prefix = without_host_libzstd() if decoder == "vendored" else []
    code, err, rss = run_app_measured(bad, "cache", "prepare", env=env_for(cache), prefix=prefix)
    assert code == 65, err
    assert "damaged" in err and len(err.strip().splitlines()) == 1, err
    assert rss < 64, rss
    bundles = cache / "v1" / "bundles"
    assert [
        p.name
        for p in bundles.iterdir()
        if p.name.startswith(("sha256-", ".tmp-")) and "." not in p.name[7:]
    ] == []


def test_a_legacy_format_payload_cannot_lift_the_window_cap(app: Path, tmp_path: Path) -> None:
    """A 10 KB payload in zstd's pre-1.0 format v0.7 whose header asks for a 128 MiB
    window, holding a valid tar of one 96 MiB file, with a manifest that fits it: the
    host's libzstd would decode it past the cap (peak RSS over 130 MB, and published);
    the launcher refuses it, exit 65 in one line, under the 64 MB bound."""
    size = 96 << 20
    info = tarfile.TarInfo("big")
    info.size = size
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    payload = legacy_v07_frame(header, size + (1 << 17))  # the file, then the end blocks

    def edit(manifest: dict) -> None:
        manifest.pop("files_digest", None)  # no files.tsv to compare the tree with
        manifest["digest"] = "sha256:" + hashlib.sha256(payload).hexdigest()
        manifest["compressed_size"] = len(payload)
        manifest.update(file_count=1, largest_file=size, unpacked_size=size + 4096)
        manifest["tar_size"] = len(header) + size + (1 << 17)

    bad = rewrite_app(app, tmp_path / "auto-review", payload=payload, edit_manifest=edit)
    cache = tmp_path / "cache"
    code, err, rss = run_app_measured(bad, "cache", "prepare", env=env_for(cache))
    assert code == 65, err
    assert "does not start with a zstd frame" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert rss < 64, rss
    published = [p.name for p in (cache / "v1" / "bundles").iterdir() if p.is_dir()]
    assert not [name for name in published if name.startswith(("sha256-", ".tmp-"))], published


def test_the_same_payload_with_a_normal_window_unpacks(app: Path, tmp_path: Path) -> None:
    """Control for the test above: the rewrite itself does not break the file."""
    with zipfile.ZipFile(app) as zf:
        tar = (
            zstandard.ZstdDecompressor()
            .stream_reader(io.BytesIO(zf.read("bundle/rootfs.tar.zst")))
            .read()
        )
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=20)
    good = with_payload(
        app,
        tmp_path / "auto-review",
        zstandard.ZstdCompressor(compression_params=params).compress(tar),
    )
    result = run_app(good, "cache", "prepare", env=env_for(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr


def test_output_whose_reader_is_gone_ends_with_120_and_no_noise(app: Path, tmp_path: Path) -> None:
    """The launcher leaves without the interpreter's teardown (launcher/bootstrap.py,
    leave): what it printed is flushed first, and a reader that went away (a closed pipe)
    ends the run with 120, as Python's own exit does, without its "Exception ignored"
    lines."""
    env = env_for(tmp_path / "cache")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        gone = subprocess.run([str(app), "cache", "path"], env=env, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    finally:
        os.close(write_end)
    assert gone.returncode == 120 and gone.stderr == ""
    kept = subprocess.run([str(app), "cache", "path"], env=env, capture_output=True, text=True)
    assert kept.returncode == 0 and kept.stdout == f"{tmp_path / 'cache'}\n", kept.stderr


def test_a_closed_stdout_or_stderr_keeps_the_exit_code(app: Path, tmp_path: Path) -> None:
    """Started with `>&-` (or `2>&-`), Python has no sys.stdout (sys.stderr): None. The
    launcher's exit (launcher/bootstrap.py, leave) flushes the streams there are and
    keeps the command's code, as Python's own exit does: no traceback, no exit 1."""
    env = env_for(tmp_path / "cache")
    closed_out = subprocess.run(["/bin/sh", "-c", 'exec "$0" cache path >&-', str(app)],
                                env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert closed_out.returncode == 0 and closed_out.stderr == "", closed_out.stderr
    closed_err = subprocess.run(["/bin/sh", "-c", 'exec "$0" cache path 2>&-', str(app)],
                                env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert closed_err.returncode == 0 and closed_err.stdout == f"{tmp_path / 'cache'}\n"


def test_a_reader_that_goes_away_mid_output_ends_with_120_and_no_noise(
    app: Path, tmp_path: Path
) -> None:
    """`bundle sbom | head -c 10`: the launcher is still writing when its reader goes
    away. That was "internal error (BrokenPipeError ...)", exit 70; it is the same 120 as
    at the final flush, and silent. A BrokenPipeError that is not about stdout stays an
    internal error (stdout_reader_gone asks the pipe)."""
    env = env_for(tmp_path / "cache")
    proc = subprocess.Popen([str(app), "bundle", "sbom"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(10)) == 10  # the SBOM is 360 KB: far more than a pipe holds
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 120, err
    assert err == b""


def test_stdout_reader_gone_asks_the_pipe_itself() -> None:
    """True only when stdout is a pipe whose read end is closed: an open pipe, a file or
    /dev/null say False, so a BrokenPipeError elsewhere is still reported."""
    code = (
        "import sys; from launcher.bootstrap import stdout_reader_gone;"
        " sys.stderr.write(str(stdout_reader_gone()))"
    )
    cmd = [HOST_PYTHON, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}"]
    read_end, write_end = os.pipe()
    try:
        open_pipe = subprocess.run(cmd, stdout=write_end, stderr=subprocess.PIPE, text=True)
        os.close(read_end)
        closed_pipe = subprocess.run(cmd, stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    devnull = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert (open_pipe.stderr, closed_pipe.stderr, devnull.stderr) == ("False", "True", "False")
