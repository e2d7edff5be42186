"""The single file on a pure cgroup v2 host, which this machine is not (its memory
controller is on v1): a QEMU guest booting Debian's kernel with every controller on the
unified hierarchy (tests/qemuvm.py), running tests/cgroup2_guest.py as root there.

- Rootless, in a cgroup delegated as systemd's Delegate=yes does, the whole sandbox
  gets the cgroup limits root mode has (memory+swap 2 GiB, pids 1024), under crun (the
  runtime picked first on such a host) and runc; with DelegateSubgroup= too.
- A cgroup without systemd's mark is not touched; a delegated one that other processes
  share cannot take the limits: one line, and the per-process bound instead.
- `serve` on the isolated network under crun and runc, root and rootless (issue #25's
  "crun on a unified cgroup hierarchy").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import qemuvm
from conftest import needs_root

pytestmark = needs_root

GUEST = Path(__file__).with_name("cgroup2_guest.py")
LIMIT = str(2 << 30)  # launcher.sandbox.config.MEMORY_LIMIT, as memory.max shows it


@pytest.fixture(scope="module")
def guest(app: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("vm")
    result = qemuvm.run_in_guest(work, f"/usr/bin/python3 {GUEST} {app} ar-rootless")
    assert result.status == 0, f"{result.stderr[-3000:]}\n{result.console[-3000:]}"
    return json.loads(result.stdout)


def limits_of(guest: dict, scenario: str) -> str:
    items = json.loads(guest[scenario]["stdout"])["items"]
    [limits] = [i["detail"] for i in items if i["name"] == "limits"]
    return limits


def test_the_guest_has_every_controller_on_the_unified_hierarchy(guest: dict) -> None:
    assert {"memory", "pids"} <= set(guest["controllers"])


@pytest.mark.parametrize("runtime", ["crun", "runc"])
def test_a_delegated_cgroup_caps_the_whole_rootless_sandbox(guest: dict, runtime: str) -> None:
    """3 GiB is refused by the cgroup's OOM kill (137), not by RLIMIT_DATA's refusal (3):
    the limit is on the sandbox as a whole; `check` reads its cgroup's pids.max."""
    prefix = "rootless" if runtime == "crun" else "rootless_runc"
    big = guest[f"{prefix}_alloc_big"]
    assert big["status"] == 137, big
    assert big["tree"] == ["auto-review.launcher"]  # the launcher's leaf; the sandbox's is gone
    check = guest[f"{prefix}_check"]
    assert check["status"] == 0, check["stderr"]
    items = {i["name"]: i for i in json.loads(check["stdout"])["items"]}
    assert all(i["ok"] for i in items.values()), [i for i in items.values() if not i["ok"]]
    assert items["pids-limit"]["detail"] == "cgroup /sys/fs/cgroup/pids.max = 1024"
    if runtime == "crun":
        assert f"runtime {runtime} " in check["stderr"]  # picked first on a v2 host
        assert guest["rootless_alloc_small"]["stdout"].strip() == "allocated"


@pytest.mark.parametrize(
    "name", ["memory.max", "pids.max", "cgroup.procs", "cgroup.subtree_control"]
)
def test_the_sandbox_cannot_lift_its_own_limits(guest: dict, name: str) -> None:
    """The sandbox's root maps to the uid that owns the delegated cgroup on the host, so
    its cgroup files are its own: they are reached only through a read-only cgroup mount
    (in a cgroup namespace, below nsdelegate's boundary), never written."""
    for scenario in (f"raise_{name}", f"raise_runc_{name}"):  # crun, then runc
        attempt = guest[scenario]
        assert (attempt["status"], attempt["stdout"].strip()) == (1, "EROFS"), attempt


def test_delegate_subgroup_is_used_as_systemd_leaves_it(guest: dict) -> None:
    """Under DelegateSubgroup= the launcher starts in a leaf already: no leaf of ours."""
    big = guest["subgroup_alloc_big"]
    assert (big["status"], big["tree"]) == (137, ["supervisor"]), big
    assert "in the delegated cgroup /ar-" in limits_of(guest, "subgroup_doctor")


def test_doctor_started_in_the_delegated_cgroup_gives_its_sandbox_the_limits(
    guest: dict,
) -> None:
    """doctor's own sandbox gets what its `limits` line names: doctor moves into the
    leaf first, so the run finds the base empty and enables memory and pids."""
    doctor = guest["rootless_doctor"]
    assert doctor["status"] == 0, doctor["stderr"]
    assert doctor["enabled"] == ["memory", "pids"], doctor
    assert doctor["tree"] == ["auto-review.launcher"]


def test_doctor_says_which_bound_is_in_force(guest: dict) -> None:
    assert limits_of(guest, "rootless_doctor").startswith("rootless, in the delegated cgroup /ar-")
    assert "memory 2048 MiB (memory+swap of the whole sandbox)" in limits_of(
        guest, "rootless_doctor"
    )
    unmarked = limits_of(guest, "unmarked_doctor")
    assert "RLIMIT_DATA 2048 MiB per process (no delegated cgroup v2 subtree" in unmarked
    assert "Delegate=yes" in unmarked
    crowded = limits_of(guest, "crowded_doctor")
    assert "delegated cgroup not usable: /ar-" in crowded and "holds other processes" in crowded


def test_a_cgroup_without_systemds_mark_is_left_alone(guest: dict) -> None:
    """Writable but not marked user.delegate=1: nothing made or moved, RLIMIT_DATA."""
    big = guest["unmarked_alloc_big"]
    assert (big["status"], big["stdout"].strip(), big["tree"]) == (3, "refused", []), big


def test_a_shared_delegation_falls_back_with_one_line(guest: dict) -> None:
    big = guest["crowded_alloc_big"]
    assert (big["status"], big["stdout"].strip()) == (3, "refused"), big
    [line] = big["stderr"].splitlines()
    assert line.startswith("auto-review: delegated cgroup not used: /ar-")
    assert line.endswith("memory is capped per process (RLIMIT_DATA) instead")


@pytest.mark.parametrize(
    "scenario", ["root_serve", "root_runc_serve", "rootless_serve", "rootless_runc_serve"]
)
def test_serve_on_the_isolated_network(guest: dict, scenario: str) -> None:
    """Ready, /info through the forwarded port, and a clean stop on SIGTERM."""
    served = guest[scenario]
    runtime = "runc" if "runc" in scenario else "crun"
    assert served["info"] and served["info"][0] == 200, served
    assert served["info"][1]["isolation"] == runtime
    assert served["status"] == 0, served["stderr"]
    assert "auto-review: stopped" in served["stderr"]
    assert "not used" not in served["stderr"]
    if scenario.startswith("rootless"):  # the sandbox's own cgroup, beside the leaf
        limits = dict(served["limits"])
        assert limits.pop("auto-review.launcher") == "max", served["limits"]
        assert list(limits.values()) == [LIMIT], served["limits"]
