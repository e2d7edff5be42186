"""The Nix flake: a parse check that needs no network, and its rootfs check script run
against a real rootfs (the session's single file, unpacked)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

NIX_FILES = [ROOT / "flake.nix", *sorted((ROOT / "nix").glob("*.nix"))]
CHECK = ROOT / "nix" / "check-rootfs.py"


def parse(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nix-instantiate", "--parse", str(path)], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_nix_files_parse(path: Path) -> None:
    proc = parse(path)
    assert proc.returncode == 0, proc.stderr


def test_parse_check_catches_errors(tmp_path: Path) -> None:
    """Control: the parse check fails on a syntax error and on an unbound name."""
    text = (ROOT / "flake.nix").read_text()
    broken = tmp_path / "flake.nix"
    broken.write_text(text.replace("outputs = {", "outputs = {{", 1))
    assert parse(broken).returncode != 0
    broken.write_text(text.replace("inherit rootfs auto-review oci;", "inherit rootfs nope;", 1))
    proc = parse(broken)
    assert proc.returncode != 0 and "nope" in proc.stderr


def test_flake_shape() -> None:
    """Pinned nixpkgs in the URL, no hand-written lock, both systems, the named outputs."""
    text = (ROOT / "flake.nix").read_text()
    assert 'inputs.nixpkgs.url = "github:NixOS/nixpkgs/' in text
    assert not (ROOT / "flake.lock").exists()
    assert "narHash" not in text
    for needle in (
        '"x86_64-linux"',
        '"aarch64-linux"',
        "gitMinimal",
        "cacert",
        "python311",
        "build.py --rootfs",
        "bundle export --oci",
        "check-rootfs.py",
        "runc",
        "skopeo",
        "umoci",
    ):
        assert needle in text, needle


def test_one_source_of_truth() -> None:
    """The Nix scripts read [contract] through buildsys from rootfs.toml; no copies."""
    from buildsys.recipe import Recipe

    recipe = Recipe.load()
    for script in (CHECK, ROOT / "nix" / "assemble-rootfs.py"):
        text = script.read_text()
        assert "rootfs.toml" in text and "import buildsys." in text, script
        assert '"busybox"' not in text and "'busybox'" not in text, script
        quoted = {f"{q}{name}{q}" for name in recipe.forbidden for q in "\"'"}
        assert not [q for q in quoted if q in text], script
        assert not [p for p in recipe.required if f'"{p}"' in text], script


def unpack(app: Path, dest: Path) -> Path:
    """The single file's rootfs, unpacked with tar as a user would see it."""
    import zstandard

    with zipfile.ZipFile(app) as zf:
        payload = zf.read("bundle/rootfs.tar.zst")
    tar = zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    dest.mkdir()
    subprocess.run(["tar", "-x", "-p", "-f", "-", "-C", str(dest)], input=tar, check=True)
    return dest


def run_check(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), str(root), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def unpacked(app: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack(app, tmp_path_factory.mktemp("flake") / "rootfs")


def test_check_passes_on_real_rootfs(app: Path, unpacked: Path) -> None:
    proc = run_check(unpacked, "--app", str(app))
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


def test_check_fails_on_added_shell(app: Path, unpacked: Path, tmp_path: Path) -> None:
    bad = tmp_path / "rootfs"
    shutil.copytree(unpacked, bad, symlinks=True)
    (bad / "usr" / "bin" / "sh").write_bytes(b"\x7fELF not really")
    proc = run_check(bad)
    assert proc.returncode != 0
    assert "/usr/bin/sh" in proc.stderr
    # The single file no longer describes this tree either.
    proc = run_check(bad, "--app", str(app))
    assert "diff_id" in proc.stderr


def test_check_fails_on_escaping_symlink_and_missing_library(
    unpacked: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "rootfs"
    shutil.copytree(unpacked, bad, symlinks=True)
    (bad / "usr" / "lib" / "escape").symlink_to("../../../../../etc/shadow")
    git = Path(os.path.realpath(bad / "usr" / "bin" / "git"))
    assert git.is_file()
    from buildsys.elf import read_elf

    needed = read_elf(git).needed
    for victim in bad.rglob(needed[0]):  # e.g. libz.so.1, and any link to it
        victim.unlink()
    proc = run_check(bad)
    assert proc.returncode != 0
    assert "/usr/lib/escape" in proc.stderr
    assert f"needed {needed[0]} not inside" in proc.stderr
