"""The single file's first lines: `/bin/sh` execs `python3 -I -S -c BOOT "$0" "$@"`, which
runs the zip's __main__ as `python3 FILE` would, without runpy (buildsys/zipapp.py).
Each test runs the real file the way a user does: `./auto-review`."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

from conftest import preamble_command

from buildsys.zipapp import SHEBANG

# Every compile of a file, and whether runpy got imported, around the file's own BOOT.
RECORDING = """
import atexit, os, sys
compiled = []
sys.addaudithook(lambda ev, args: ev == "compile" and args[1] != "<string>"
                 and compiled.append(str(args[1])))
atexit.register(lambda: print("COMPILED", compiled, "RUNPY", "runpy" in sys.modules,
                              file=sys.stderr))
exec(os.environ["BOOT"])
"""


def test_the_file_runs_itself_without_runpy_and_compiles_nothing(app: Path, tmp_path: Path) -> None:
    python, *flags, boot = preamble_command(app)
    assert python == "python3" and flags == ["-I", "-S", "-c"]
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(tmp_path / "cache"), BOOT=boot)
    for args in (("--version",), ("-q", "cache", "prepare"), ("-q", "cache", "prepare")):
        result = subprocess.run(["python3", "-I", "-S", "-c", RECORDING, str(app), *args],
                                env=env, capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "COMPILED [] RUNPY False" in result.stderr, result.stderr


def test_its_python3_imports_stored_bytecode_and_makes_no_code_dir(
    app: Path, tmp_path: Path
) -> None:
    """The file carries its launcher's bytecode for the host's python3, stored and
    unchecked: a cold and a warm start import every launcher module from the file
    itself, a warm one without zlib (nothing to inflate, no source read to check a
    hash), and no code dir is written to the cache (a cold start wrote one beside its
    unpack: 40 ms of CPU, for what stored bytecode gives a warm start anyway)."""
    python, *flags, boot = preamble_command(app)
    with zipfile.ZipFile(app) as zf:
        pycs = [i for i in zf.infolist() if i.filename.endswith(".pyc")]
        assert pycs and {i.compress_type for i in pycs} == {zipfile.ZIP_STORED}
        assert {zf.read(i.filename)[4:8] for i in pycs} == {b"\x01\0\0\0"}  # unchecked
    cache = tmp_path / "cache"
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache))
    for start in ("cold", "warm"):
        result = subprocess.run([python, "-v", *flags, boot, str(app), "-q", "cache", "prepare"],
                                env=env, capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        lines = result.stderr.splitlines()
        ours = [line for line in lines if line.startswith("import 'launcher")]
        assert len(ours) > 10, start
        assert [line for line in ours if str(app) not in line] == []
        if start == "warm":
            assert [line for line in lines if line.startswith("import 'zlib'")] == []
        assert [line for line in lines if line.startswith("import 'zipfile'")] == [], start
    assert (cache / "v1" / "bundles").is_dir() and not (cache / "v1" / "code").exists()


def test_a_relative_path_and_a_hostile_working_dir(app: Path, tmp_path: Path) -> None:
    """Started as ./auto-review from a directory that plants the modules the preamble and
    the launcher import: none of them loads (-I puts no directory in front of sys.path,
    with -c too), and the single file is found by its absolute path after a chdir."""
    work = tmp_path / "repo"
    (work / "launcher").mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    plant = f"open({str(marker)!r}, 'w').write(__name__)\n"
    for name in ("zipimport.py", "runpy.py", "launcher/__init__.py", "fcntl.py", "json.py"):
        (work / name).write_text(plant)
    (work / "auto-review").symlink_to(app)
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(tmp_path / "cache"))
    version = subprocess.run(["./auto-review", "--version"], cwd=work, env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert version.returncode == 0, version.stderr
    with zipfile.ZipFile(app) as zf:
        digest = json.loads(zf.read("bundle/bundle.json"))["digest"]
    assert digest.split(":")[1][:12] in version.stdout
    prepared = subprocess.run(["sh", "auto-review", "-q", "cache", "prepare"], cwd=work,
                              env=env, capture_output=True, text=True)  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr
    assert not marker.exists(), marker.read_text()


def test_a_truncated_file_is_one_line_and_exit_65(app: Path, tmp_path: Path) -> None:
    """A download cut short has no zip directory: one line that says what to do."""
    for size in (len(SHEBANG) + 10, 100_000, app.stat().st_size - 100):
        cut = tmp_path / f"auto-review-{size}"
        with open(app, "rb") as src, open(cut, "wb") as dst:
            dst.write(src.read(size))
        cut.chmod(0o755)
        result = subprocess.run([str(cut), "--version"], capture_output=True, text=True)
        assert result.returncode == 65, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert "is not a whole auto-review file" in lines[0]
        assert lines[0].endswith("-- download it again")


def test_a_path_through_a_symlinked_dir_and_dotdot(app: Path, tmp_path: Path) -> None:
    """`./link/../auto-review` is the file beside link's target, as the kernel resolved
    it when the shell ran it: the preamble makes the path absolute without normpath,
    which would drop `link/..` and name a file that does not exist."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "auto-review").symlink_to(app)
    (tmp_path / "link").symlink_to(real / "sub")
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run(["./link/../auto-review", "--version"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("auto-review ")


def test_an_older_python_is_told_the_version_it_needs(app: Path) -> None:
    """BOOT's first check, before it compiles anything: the file's own BOOT run by an
    interpreter that says it is 3.9 (3.6 cannot even compile __main__, and was told to
    download the file again)."""
    _python3, *flags, boot = preamble_command(app)
    older = f"import sys; sys.version_info = (3, 9, 18)\n{boot}"
    result = subprocess.run(["python3", *flags, older, str(app), "--version"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr == "auto-review: needs Python 3.10 or newer -- run it with python3.10+\n"
    assert result.stdout == ""


LINE = """
import linecache, sys
sys.path.insert(0, sys.argv[1])
import launcher.cache.warm as warm
code = warm.acquire.__code__
print(code.co_filename)
print(linecache.getline(code.co_filename, code.co_firstlineno, warm.__dict__).strip())
"""


def test_tracebacks_show_the_files_own_lines_never_the_working_dirs(
    app: Path, tmp_path: Path
) -> None:
    """The file's bytecode was compiled as "launcher/x.py": a traceback or a warning
    from it read the lines of a launcher/x.py in the working dir (a repository's, or a
    FIFO that blocks). It names an absolute path no file has, and linecache asks the
    zip for the source."""
    planted = tmp_path / "launcher" / "cache"
    planted.mkdir(parents=True)
    (planted / "warm.py").write_text("PLANTED\n" * 400)
    result = subprocess.run(["python3", "-I", "-S", "-c", LINE, str(app)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    filename, line = result.stdout.splitlines()
    assert filename == "/<auto-review>/launcher/cache/warm.py"
    assert line.startswith("def acquire("), line
