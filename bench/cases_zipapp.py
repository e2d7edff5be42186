"""For context: the same trivial entry point packed with shiv and with PEX (pinned,
installed into a throwaway venv), warm and cold, vs `python3 -I -S -c pass`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from measure import APP_PYTHON, PYTHON, Row, fmt, ratio, run, timed

# The reference zipapp tools, installed by the script into a throwaway venv.
SHIV_VERSION = "1.0.8"
PEX_VERSION = "2.105.2"
PINS = (f"shiv=={SHIV_VERSION}", f"pex=={PEX_VERSION}")


def bare_python(rounds: int) -> list[float]:
    """The reference start: an interpreter that imports nothing."""
    return timed(lambda: run([PYTHON, "-I", "-S", "-c", "pass"]), rounds)


def pack_hello(work: Path) -> tuple[Path, Path]:
    """Install the pinned shiv and PEX into a throwaway venv and pack `hello:main`
    with each; returns (hello.shiv, hello.pex)."""
    venv, src = work / "venv", work / "src"
    src.mkdir(parents=True)
    (src / "hello.py").write_text("import sys\n\n\ndef main() -> None:\n    sys.exit(0)\n")
    bin_dir = venv / "bin"
    run([PYTHON, "-m", "venv", str(venv)])
    run([str(bin_dir / "pip"), "install", "-q", *PINS])
    shiv_file, pex_file = work / "hello.shiv", work / "hello.pex"
    shiv = [str(bin_dir / "shiv"), "-e", "hello:main", "-o", str(shiv_file)]
    run([*shiv, "--site-packages", str(src)])
    run([str(bin_dir / "pex"), "-D", str(src), "-e", "hello:main", "-o", str(pex_file)])
    return shiv_file, pex_file


def zipapp_rows(app: Path, rounds: int, base: Path) -> list[Row]:
    """`hello:main` packed with shiv and PEX: warm and cold start (their own cache,
    SHIV_ROOT / PEX_ROOT, emptied before each cold round), vs a bare interpreter;
    and our warm `--version` vs shiv's warm start. One explanatory row if the tools
    cannot be installed or packed (e.g. no network)."""
    work = base / "zipapps"
    try:
        shiv_file, pex_file = pack_hello(work)
    except (OSError, subprocess.CalledProcessError) as exc:
        why = f"exit {exc.returncode}" if isinstance(exc, subprocess.CalledProcessError) else exc
        cell = f"`pip install {' '.join(PINS)}` / packing failed ({why})"
        return [("shiv / PEX", "not measured", cell, "", "context")]
    ref = bare_python(rounds)
    ref_cell = f"`python3 -I -S -c pass`: {fmt(ref)}"
    rows: list[Row] = []
    warm_by_tool: dict[str, list[float]] = {}
    for name, file, root_var in (("shiv", shiv_file, "SHIV_ROOT"), ("PEX", pex_file, "PEX_ROOT")):
        root = work / f"{name.lower()}-root"
        env = dict(os.environ, **{root_var: str(root)})
        cold = timed(
            lambda f=file, e=env: run([PYTHON, str(f)], e),
            rounds,
            lambda r=root: shutil.rmtree(r, ignore_errors=True),
        )
        run([PYTHON, str(file)], env)  # the cache is filled: warm from here on
        warm = warm_by_tool[name] = timed(lambda f=file, e=env: run([PYTHON, str(f)], e), rounds)
        rows.append((f"{name} warm start", fmt(warm), ref_cell, ratio(warm, ref), "context"))
        rows.append((f"{name} cold start", fmt(cold), ref_cell, ratio(cold, ref), "context"))
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(work / "ar-cache"))
    run([*APP_PYTHON, str(app), "-q", "cache", "prepare"], env)
    ours = timed(lambda: run([*APP_PYTHON, str(app), "--version"], env), rounds)
    shiv_warm = warm_by_tool["shiv"]
    rows.append(
        (
            "warm `auto-review --version` vs shiv",
            fmt(ours),
            f"shiv warm start: {fmt(shiv_warm)}",
            ratio(ours, shiv_warm),
            "context",
        )
    )
    return rows
