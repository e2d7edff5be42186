"""Run inside tests/qemuvm.py's guest (a pure cgroup v2 host), as root: the single file
under every runtime and mode this host lacks, as a systemd host would run it. Prints
one JSON object: each scenario's exit status, output and what was seen around it.

    python3 cgroup2_guest.py APP USER

A cgroup is delegated to USER exactly as systemd does for a unit with Delegate=yes:
the directory and its cgroup.procs, cgroup.subtree_control and cgroup.threads chowned,
memory and pids enabled by its parent, the user.delegate=1 mark set. Commands start
inside it (the shell writes itself into cgroup.procs, then execs setpriv).
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys

CG = "/sys/fs/cgroup"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def delegate(name: str, uid: int, gid: int, mark: bool = True) -> str:
    """A cgroup under the root, handed to uid as systemd's Delegate=yes does."""
    path = f"{CG}/{name}"
    os.mkdir(path)
    for entry in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
        os.chown(os.path.join(path, entry) if entry else path, uid, gid)
    if mark:
        os.setxattr(path, "user.delegate", b"1")
    return path


class Units:
    """Fresh cgroups, one per command, as systemd makes one per unit start: `kind` is
    "delegated" (Delegate=yes), "subgroup" (Delegate=yes with DelegateSubgroup=supervisor:
    the command starts in a leaf of the delegated cgroup), "unmarked" (chowned like a
    delegation but without systemd's mark) or "root" (a root service's cgroup)."""

    def __init__(self, uid: int, gid: int) -> None:
        self.uid, self.gid, self.count = uid, gid, 0
        self.made: dict[str, str] = {}

    def start_in(self, kind: str) -> str:
        self.count += 1
        name = f"ar-{self.count}.service"
        if kind == "root":
            path = f"{CG}/{name}"
            os.mkdir(path)
        else:
            path = delegate(name, self.uid, self.gid, mark=kind != "unmarked")
        self.made[kind] = path
        if kind == "subgroup":
            leaf = f"{path}/supervisor"
            os.mkdir(leaf)
            os.chown(leaf, self.uid, self.gid)
            for entry in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
                os.chown(f"{leaf}/{entry}", self.uid, self.gid)
            return leaf
        return path


def launch(app: str, cgroup: str, user: str | None, home: str, *args: str, **env: str):
    """The single file, started in `cgroup` as `user` (None: root) with a clean env."""
    variables = {"PATH": PATH, "HOME": home, "AUTO_REVIEW_CACHE_DIR": f"{home}/cache",
                 "AUTO_REVIEW_STATE_DIR": f"{home}/state", **env}  # fmt: skip
    argv = ["env", "-i", *(f"{k}={v}" for k, v in variables.items()),
            "/usr/bin/python3", app, *args]  # fmt: skip
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    # crowded: the shell stays in the cgroup beside the launcher (not exec'd), as an
    # interactive shell in a delegated scope would
    crowded = env.pop("CROWDED", "")
    line = f"echo $$ > {cgroup}/cgroup.procs && {'' if crowded else 'exec'} {shlex.join(argv)}"
    return subprocess.Popen(["sh", "-c", line], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)  # fmt: skip


def run(app: str, cgroup: str, user: str | None, home: str, *args: str, **env: str) -> dict:
    proc = launch(app, cgroup, user, home, *args, **env)
    out, err = proc.communicate(timeout=900)
    return {"status": proc.returncode, "stdout": out, "stderr": err}


def serve(app: str, cgroup: str, user: str | None, home: str, **env: str) -> dict:
    """`serve` on the isolated network: its ready line, /info through the forwarded
    port, SIGTERM, and its exit status."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = launch(app, cgroup, user, home, "-v", "serve", AR_GATEWAY_BIND=f"127.0.0.1:{port}",
                  WEBHOOK_SECRET="s3cret", FORGEJO_BASE_URL="https://forge.invalid",
                  AR_FORGEJO_TOKEN="t0ken", **env)  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # waits on the process's output, not on a clock
        seen.append(line)
        if "serving on" in line:
            break
    answer, limits = None, {}
    if proc.poll() is None:
        for name in os.listdir(cgroup):  # the sandbox's cgroup, made beside the launcher's
            if os.path.isfile(f"{cgroup}/{name}/memory.max"):
                with open(f"{cgroup}/{name}/memory.max") as fh:
                    limits[name] = fh.read().strip()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("GET", "/info")
            response = conn.getresponse()
            answer = [response.status, json.loads(response.read())]
            conn.close()
        except OSError as exc:
            answer = [None, repr(exc)]
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    return {"status": proc.returncode, "stdout": "".join(seen) + out, "stderr": err,
            "info": answer, "limits": limits}  # fmt: skip


def tree(path: str) -> list[str]:
    return sorted(os.path.relpath(d, path) for d, _dirs, _files in os.walk(path) if d != path)


def main(app_src: str, user: str) -> dict:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                       check=True)  # fmt: skip
        entry = pwd.getpwnam(user)
    uid, gid = entry.pw_uid, entry.pw_gid
    base = "/run/ar-guest"
    os.makedirs(base, mode=0o755)
    app = f"{base}/auto-review"
    shutil.copy(app_src, app)
    os.chmod(app, 0o755)
    homes = {}
    for who in ("root", "user"):
        homes[who] = f"{base}/{who}"
        os.mkdir(homes[who], 0o700)
        if who == "user":
            os.chown(homes[who], uid, gid)
    with open(f"{CG}/cgroup.subtree_control", "w") as fh:
        fh.write("+memory +pids")
    units = Units(uid, gid)
    with open(f"{CG}/cgroup.controllers") as fh:
        report: dict = {"controllers": fh.read().split()}
    u, h, hr = user, homes["user"], homes["root"]

    def as_user(name: str, kind: str, *args: str, **env: str) -> None:
        report[name] = run(app, units.start_in(kind), u, h, *args, **env)
        report[name]["tree"] = tree(units.made[kind])
        with open(f"{units.made[kind]}/cgroup.subtree_control") as fh:
            report[name]["enabled"] = fh.read().split()  # what the run enabled for children

    as_user("rootless_check", "delegated", "-v", "check", "--json")
    as_user("rootless_alloc_small", "delegated", "probe", "alloc", "64")
    as_user("rootless_alloc_big", "delegated", "probe", "alloc", "3072")
    as_user("rootless_doctor", "delegated", "doctor", "--json")
    as_user("rootless_runc_alloc_big", "delegated", "probe", "alloc", "3072",
            AUTO_REVIEW_RUNTIME="runc")  # fmt: skip
    as_user("rootless_runc_check", "delegated", "check", "--json", AUTO_REVIEW_RUNTIME="runc")
    for name in ("memory.max", "pids.max", "cgroup.procs", "cgroup.subtree_control"):
        as_user(f"raise_{name}", "delegated", "probe", "write", f"/sys/fs/cgroup/{name}")
        as_user(f"raise_runc_{name}", "delegated", "probe", "write", f"/sys/fs/cgroup/{name}",
                AUTO_REVIEW_RUNTIME="runc")  # fmt: skip
    as_user("subgroup_alloc_big", "subgroup", "probe", "alloc", "3072")
    as_user("subgroup_doctor", "subgroup", "doctor", "--json")
    as_user("crowded_alloc_big", "delegated", "probe", "alloc", "3072", CROWDED="1")
    as_user("crowded_doctor", "delegated", "doctor", "--json", CROWDED="1")
    as_user("unmarked_alloc_big", "unmarked", "probe", "alloc", "3072")
    as_user("unmarked_doctor", "unmarked", "doctor", "--json")
    report["rootless_serve"] = serve(app, units.start_in("delegated"), u, h)
    report["rootless_runc_serve"] = serve(app, units.start_in("delegated"), u, h,
                                          AUTO_REVIEW_RUNTIME="runc")  # fmt: skip
    report["root_check"] = run(app, units.start_in("root"), None, hr, "-v", "check", "--json")
    report["root_serve"] = serve(app, units.start_in("root"), None, hr)
    report["root_runc_serve"] = serve(app, units.start_in("root"), None, hr,
                                      AUTO_REVIEW_RUNTIME="runc")  # fmt: skip
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
