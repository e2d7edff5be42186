"""`auto-review cache ...` through the real single file, run as a user would run it."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from conftest import run_app
from test_gc import HOLD_USE_LOCK, holding, plant_version

from launcher.cache.paths import Layout


@pytest.fixture(scope="session")
def manifest(app: Path) -> dict:
    """The real single file's embedded manifest."""
    return json.loads(run_app(app, "bundle", "info", "--json", check=True).stdout)


@pytest.fixture
def layout(app: Path, cache_dir: Path) -> Layout:
    """A cache holding the real version, unpacked by `cache prepare`."""
    run_app(app, "cache", "prepare", check=True)
    return Layout(str(cache_dir))


def listed(app: Path) -> list[dict]:
    result = run_app(app, "cache", "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def snapshot(root: Path) -> list[tuple[str, int]]:
    """Every path under root with its lstat size, without following symlinks."""
    return sorted((str(p.relative_to(root)), p.lstat().st_size) for p in root.rglob("*"))


def test_path_prints_the_cache_dir(app: Path, cache_dir: Path) -> None:
    result = run_app(app, "cache", "path")
    assert result.returncode == 0
    assert result.stdout == f"{cache_dir}\n"
    assert not cache_dir.exists()  # asking where it is creates nothing


def test_prepare_then_list_shows_the_current_version(
    app: Path, cache_dir: Path, manifest: dict
) -> None:
    assert listed(app) == []
    result = run_app(app, "cache", "prepare")
    assert result.returncode == 0, result.stderr
    vdir = Path(result.stdout.strip())
    assert vdir == Path(Layout(str(cache_dir)).version_dir(manifest["digest"]))
    assert (vdir / ".complete").exists()

    [row] = listed(app)
    assert row["version"] == manifest["version"]
    assert row["digest"] == manifest["digest"]
    assert row["size"] == manifest["unpacked_size"]
    assert (row["current"], row["in_use"], row["pinned"]) == (True, False, False)

    with holding(HOLD_USE_LOCK, str(cache_dir), manifest["digest"]):
        [row] = listed(app)
        assert row["in_use"] is True
    text = run_app(app, "cache", "list").stdout.splitlines()
    assert text[0].split() == ["VERSION", "DIGEST", "SIZE", "LAST", "USED", "IN", "USE",
                               "PINNED", "CURRENT"]  # fmt: skip
    assert text[1].split() == [
        manifest["version"], manifest["digest"][:19],
        f"{manifest['unpacked_size'] / 1e6:.1f}", "MB", "just", "now", "-", "-", "yes",
    ]  # fmt: skip


def test_verify_passes_then_names_tampered_and_extra_files(
    app: Path, layout: Layout, manifest: dict
) -> None:
    result = run_app(app, "cache", "verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK {manifest['version']} ({manifest['digest'][:19]})")

    rootfs = Path(layout.rootfs(manifest["digest"]))
    lines = (Path(layout.version_dir(manifest["digest"])) / "files.tsv").read_text().splitlines()
    victim = next(f.split("\t")[4] for f in lines if f.startswith("file\t") and
                  int(f.split("\t")[2]) > 100)  # fmt: skip
    target = rootfs / victim
    target.chmod(target.stat().st_mode | stat.S_IWUSR)
    data = bytearray(target.read_bytes())
    data[50] ^= 0xFF  # same size, different content: only the hash can tell
    target.write_bytes(bytes(data))
    (target.parent / "planted-extra").write_text("not from the bundle")

    result = run_app(app, "cache", "verify", manifest["version"])
    assert result.returncode == 65, result.stderr
    assert f"MISMATCH {victim}: content differs" in result.stdout
    extra = str(Path(victim).parent / "planted-extra")
    assert f"MISMATCH {extra}: not in the file list" in result.stdout
    assert victim in result.stderr


def test_verify_needs_an_unpacked_version(app: Path, cache_dir: Path) -> None:
    result = run_app(app, "cache", "verify")
    assert result.returncode == 66
    assert "is not unpacked" in result.stderr and "cache prepare" in result.stderr


def test_pin_and_unpin_round_trip(app: Path, layout: Layout, manifest: dict) -> None:
    label = manifest["version"]
    result = run_app(app, "cache", "pin", label)
    assert result.returncode == 0, result.stderr
    assert listed(app)[0]["pinned"] is True
    again = run_app(app, "cache", "pin", label)  # idempotent, and says so
    assert again.returncode == 0 and "already pinned: nothing changed" in again.stdout
    pins = Path(layout.pins)
    assert stat.S_IMODE(pins.stat().st_mode) == 0o700
    assert os.listdir(pins) == [layout.dirname(manifest["digest"])]

    result = run_app(app, "cache", "unpin", manifest["digest"][:20])
    assert result.returncode == 0, result.stderr
    assert f"unpinned {label}" in result.stdout
    assert listed(app)[0]["pinned"] is False
    result = run_app(app, "cache", "unpin", label)  # a second unpin, like a second pin
    assert result.returncode == 0, result.stderr
    assert f"{label} ({manifest['digest'][:19]}) is not pinned: nothing changed" in result.stdout
    assert os.listdir(pins) == []


def test_pin_of_an_unknown_version_lists_the_available_ones(
    app: Path, layout: Layout, manifest: dict
) -> None:
    result = run_app(app, "cache", "pin", "nope")
    assert result.returncode == 66
    assert "available versions" in result.stderr
    assert f"{manifest['version']} ({manifest['digest'][:19]})" in result.stderr
    assert not os.path.exists(layout.pins)
    env = dict(os.environ, AUTO_REVIEW_BUNDLE="nope")
    result = run_app(app, "cache", "prepare", env=env)
    assert result.returncode == 66
    assert manifest["digest"][:19] in result.stderr


def test_clear_skips_and_names_the_version_in_use(
    app: Path, layout: Layout, manifest: dict
) -> None:
    current = manifest["digest"]
    old = plant_version(layout, "0.0.1", age_days=1, like=manifest)
    pinned = plant_version(layout, "0.0.2", age_days=1, like=manifest)
    assert run_app(app, "cache", "pin", "0.0.2").returncode == 0
    Path(layout.bundles, ".trash-sha256-00-1").mkdir()

    with holding(HOLD_USE_LOCK, layout.root, current):
        result = run_app(app, "cache", "clear")
    assert result.returncode == 75, result.stderr
    assert f"skipped {manifest['version']} ({current[:19]}): in use" in result.stdout
    assert f"removed 0.0.1 ({old[:19]})" in result.stdout
    assert f"removed 0.0.2 ({pinned[:19]})" in result.stdout
    assert f"unpinned 0.0.2 ({pinned[:19]})" in result.stdout
    assert "removed .trash-sha256-00-1" in result.stdout
    assert "in use" in result.stderr
    assert [row["digest"] for row in listed(app)] == [current]
    assert os.path.isdir(layout.rootfs(current))
    assert os.listdir(layout.pins) == []

    result = run_app(app, "cache", "clear")
    assert result.returncode == 0, result.stderr
    assert f"removed {manifest['version']} ({current[:19]})" in result.stdout
    assert listed(app) == []
    assert os.listdir(layout.bundles) == []
    assert not os.path.exists(layout.vendor) or os.listdir(layout.vendor) == []


def test_clear_dry_run_removes_nothing(
    app: Path, layout: Layout, manifest: dict, cache_dir: Path
) -> None:
    old = plant_version(layout, "0.0.1", age_days=1, like=manifest)
    assert run_app(app, "cache", "pin", "0.0.1").returncode == 0
    before = snapshot(cache_dir)
    result = run_app(app, "cache", "clear", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"would remove 0.0.1 ({old[:19]})" in result.stdout
    assert f"would remove {manifest['version']} ({manifest['digest'][:19]})" in result.stdout
    assert f"would unpin 0.0.1 ({old[:19]})" in result.stdout
    assert "would free" in result.stdout
    # The one file a dry run may add is the empty lock it holds while it looks (a first
    # run that found nothing to collect never took it).
    lock = ("v1/.gc.lock", 0)
    assert [e for e in snapshot(cache_dir) if e != lock] == [e for e in before if e != lock]


def test_unpin_works_for_a_version_no_longer_cached(
    app: Path, layout: Layout, manifest: dict
) -> None:
    old = plant_version(layout, "0.0.1", age_days=1, like=manifest)
    assert run_app(app, "cache", "pin", old[:20]).returncode == 0
    shutil.rmtree(layout.version_dir(old))  # e.g. removed by hand
    result = run_app(app, "cache", "unpin", "0.0.1")
    assert result.returncode == 66  # the label is gone with the version...
    result = run_app(app, "cache", "unpin", old[:20])  # ...its digest still names the pin
    assert result.returncode == 0, result.stderr
    assert os.listdir(layout.pins) == []
