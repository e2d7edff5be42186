"""launcher.sandbox.cgroup2 against odd cgroup trees, built as plain directories (this
host's memory controller is on v1; tests/test_cgroup_v2.py runs the real thing in a
guest): what /proc/self/cgroup may say, a cgroup gone between find() and prepare(), a
leaf someone else owns, and a container id that names the launcher's own leaf. Each
ends in NotUsable (one line, the per-process bound instead) or None, never a traceback,
and doctor (obstacle) foresees what prepare() refuses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import needs_root
from sandboxrun import rootless_user, shared_dir  # noqa: F401 (fixtures)

from launcher.sandbox import cgroup2


def cgroup(path: Path, marked: bool = True, enabled: str = "") -> Path:
    """A directory laid out as a cgroup v2 one, with systemd's delegation mark."""
    path.mkdir(parents=True)
    (path / "cgroup.controllers").write_text("memory pids\n")
    (path / "cgroup.subtree_control").write_text(enabled)
    (path / "cgroup.procs").write_text("")
    if marked:
        os.setxattr(path, "user.delegate", b"1")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return cgroup(tmp_path / "sys" / "fs" / "cgroup", marked=False)


def proc(tmp_path: Path, text: str) -> str:
    (tmp_path / "proc-self-cgroup").write_text(text)
    return str(tmp_path / "proc-self-cgroup")


def test_a_path_outside_our_cgroup_namespace_is_not_followed_out_of_the_tree(
    root: Path, tmp_path: Path
) -> None:
    """A process whose cgroup lies outside its cgroup namespace's root sees "/../x"; ROOT
    + that is no cgroup at all (here a marked dir of ours elsewhere): never touched."""
    outside = cgroup(tmp_path / "home" / "x")
    assert cgroup2.find(str(root), proc(tmp_path, "0::/../../../home/x\n")) is None
    assert cgroup2.find(str(root), proc(tmp_path, "0::/../../../home/x/leaf\n")) is None
    assert sorted(os.listdir(outside)) == ["cgroup.controllers", "cgroup.procs",
                                           "cgroup.subtree_control"]  # fmt: skip


def test_a_container_id_naming_the_launchers_leaf_is_refused(root: Path, tmp_path: Path) -> None:
    """AUTO_REVIEW_CONTAINER_ID=auto-review.launcher is a valid id: the sandbox would
    share the launcher's cgroup (its limits, its procs) and its delete would fail."""
    cgroup(root / "svc.service")
    found = cgroup2.find(str(root), proc(tmp_path, "0::/svc.service\n"))
    assert found is not None and found.inside
    with pytest.raises(cgroup2.NotUsable, match="launcher's own cgroup"):
        cgroup2.prepare(found, cgroup2.LEAF, str(root))
    assert not (root / "svc.service" / cgroup2.LEAF).exists()  # nothing moved


def test_a_cgroup_gone_since_find_is_one_line(root: Path, tmp_path: Path) -> None:
    base = cgroup(root / "svc.service")
    found = cgroup2.find(str(root), proc(tmp_path, "0::/svc.service/supervisor\n"))
    assert found is not None and not found.inside
    (base / "cgroup.subtree_control").unlink()  # as after an rmdir: the files go first
    with pytest.raises(cgroup2.NotUsable, match=r"cannot read .*cgroup\.subtree_control"):
        cgroup2.prepare(found, "ar-1", str(root))


def test_a_failed_write_is_named_by_its_own_error_not_by_the_path(
    root: Path, tmp_path: Path
) -> None:
    """A "busy" in a unit's name is not EBUSY: the message must say what failed."""
    base = cgroup(root / "busybox.service")
    (base / "cgroup.subtree_control").unlink()
    # a file that reads but refuses a write, not with EBUSY (/proc/version: EIO)
    (base / "cgroup.subtree_control").symlink_to("/proc/version")
    found = cgroup2.find(str(root), proc(tmp_path, "0::/busybox.service/supervisor\n"))
    assert found is not None
    with pytest.raises(cgroup2.NotUsable) as caught:
        cgroup2.prepare(found, "ar-1", str(root))
    assert "holds other processes" not in str(caught.value)


PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import cgroup2  # the module alone (stdlib only): the checkout may be closed to the user
found = cgroup2.find(sys.argv[2], sys.argv[3])
out = {"obstacle": cgroup2.obstacle(found, sys.argv[2])}
try:
    out["prepare"] = cgroup2.prepare(found, "ar-1", sys.argv[2])
except cgroup2.NotUsable as exc:
    out["prepare"] = f"NotUsable: {exc}"
print(json.dumps(out))
"""


@needs_root
@pytest.mark.parametrize("foreign", ["leaf", "procs"])
def test_doctor_foresees_a_cgroup_file_that_is_not_ours(
    shared_dir: Path,  # noqa: F811
    rootless_user: str,  # noqa: F811
    foreign: str,
) -> None:
    """A leaf left by another uid, or a delegation that chowned the directory but not
    its cgroup.procs (which every move needs): prepare() cannot use it, so doctor must
    not name the cgroup bound."""
    import pwd

    user = pwd.getpwnam(rootless_user)
    top = shared_dir / f"tree-{foreign}"
    root = cgroup(top / "cg", marked=False)
    base = cgroup(root / "svc.service")
    for path in [top, root, base, *base.iterdir()]:
        os.chown(path, user.pw_uid, user.pw_gid)
    if foreign == "leaf":
        (base / cgroup2.LEAF).mkdir()  # root's, as is its cgroup.procs (0644)
        (base / cgroup2.LEAF / "cgroup.procs").write_text("")
    else:
        os.chown(base / "cgroup.procs", 0, 0)
    (top / "proc").write_text("0::/svc.service\n")
    shutil.copy(cgroup2.__file__, top / "cgroup2.py")
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", "-c", PROBE, str(top), str(root), str(top / "proc")],
        user=user.pw_uid,
        group=user.pw_gid,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    if foreign == "leaf":  # (a real kernel refuses the other case's move too)
        assert "Permission denied" in out["prepare"], out
    assert out["obstacle"] is not None, out
