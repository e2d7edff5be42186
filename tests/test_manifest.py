"""The manifest contract: what build.py writes is what launcher.manifest accepts, and a
manifest that breaks it is refused by field, as corrupt (exit 65)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import rewrite_app, run_app

from launcher.errors import ExitCode
from launcher.manifest import ManifestError, validate


@pytest.fixture(scope="module")
def manifest(app: Path) -> dict:
    return json.loads(run_app(app, "bundle", "info", "--json", check=True).stdout)


def test_the_built_manifest_keeps_the_contract(manifest: dict) -> None:
    assert validate(manifest) == manifest


BREAKS = [
    ("digest", lambda m: m.update(digest="sha256:XYZ")),
    ("diff_id", lambda m: m.pop("diff_id")),
    ("file_count", lambda m: m.update(file_count="248")),
    ("file_count", lambda m: m.update(file_count=True)),
    ("unpacked_size", lambda m: m.update(unpacked_size=-1)),
    ("schema", lambda m: m.update(schema=2)),
    ("process.user.uid", lambda m: m["process"]["user"].pop("uid")),
    ("process.args", lambda m: m["process"].update(args=[])),
    ("process.env", lambda m: m["process"].update(env=["A=1", 2])),
    ("zstd.window_log", lambda m: m["zstd"].update(window_log=31)),
    ("mounts", lambda m: m.update(mounts=[{"type": "tmpfs"}])),
    ("files_digest", lambda m: m.update(files_digest="md5:00")),
    ("uid", lambda m: m["process"]["user"].update(uid=0)),
    ("type", lambda m: m["mounts"][0].pop("type")),
]


@pytest.mark.parametrize(("field", "edit"), BREAKS, ids=[b[0] for b in BREAKS])
def test_a_broken_field_is_named(manifest: dict, field: str, edit) -> None:
    broken = copy.deepcopy(manifest)
    edit(broken)
    with pytest.raises(ManifestError) as info:
        validate(broken)
    assert field.rsplit(".", 1)[-1] in info.value.message
    assert info.value.exit_code == ExitCode.PAYLOAD_CORRUPT


def test_a_single_file_with_a_broken_manifest_is_refused(
    app: Path, tmp_path: Path, cache_dir: Path
) -> None:
    bad = rewrite_app(app, tmp_path / "auto-review", edit_manifest=lambda m: m.pop("arch"))
    result = run_app(bad, "bundle", "info")
    assert result.returncode == 65, result.stderr
    assert "manifest has no arch" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_cached_version_with_a_broken_manifest_is_not_a_version(
    app: Path, cache_dir: Path
) -> None:
    run_app(app, "cache", "prepare", check=True)
    [vdir] = [p for p in (cache_dir / "v1" / "bundles").iterdir() if p.is_dir()]
    data = json.loads((vdir / "bundle.json").read_text())
    data["process"]["args"] = "sh -c evil"
    (vdir / "bundle.json").chmod(0o600)
    (vdir / "bundle.json").write_text(json.dumps(data))
    rows = json.loads(run_app(app, "cache", "list", "--json", check=True).stdout)
    assert rows == []
