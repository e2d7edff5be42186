"""A throwaway virtual machine for what this host cannot be: a kernel of Debian's own,
booted by QEMU (emulated CPU) with a pure cgroup v2 (unified) hierarchy, whose root is this host's
file system shared read-only over virtio-9p under a RAM overlay. The guest runs one
command as root and powers off; its output comes back through a second, writable
share. Nothing of the guest outlives the run.

The kernel, QEMU, busybox and cpio come from Debian's packages (.ci/setup installs
linux-image-amd64, qemu-system-x86, busybox-static and cpio).
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# What the guest needs before its root exists (virtio-9p, the overlay), and what the
# sandbox's user-mode network opens (tun). Their dependencies are added from modinfo.
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "tun")

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/modules/$m" || echo "insmod $m failed"; done
mkdir -p /lower /ram /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 host /lower
mount -t tmpfs -o size=75% tmpfs /ram
mkdir -p /ram/upper /ram/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/ram/upper,workdir=/ram/work /newroot
mkdir -p /newroot/results
mount -t 9p -o trans=virtio,version=9p2000.L,rw results /newroot/results
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/sh /results/start.sh
"""

# Runs in the switched root (the host's tree, writable in RAM): a pure cgroup v2
# hierarchy (cgroup_no_v1=all: every controller is on the unified one), then the
# command; its output and status go to the results share.
START = """set +e
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm /dev/net
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
[ -e /dev/net/tun ] || mknod -m 0666 /dev/net/tun c 10 200
chmod 0666 /dev/net/tun
ip link set lo up
cd {cwd}
{command} >/results/stdout 2>/results/stderr
echo $? >/results/status
sync
/bin/busybox poweroff -f
"""


@dataclass
class GuestRun:
    """What the guest's command did: its exit status (None: it never finished)."""

    status: int | None
    stdout: str
    stderr: str
    console: str


def kernel() -> tuple[str, str]:
    """The newest installed Debian kernel with its modules: (its image, its version)."""
    images = [i for i in glob.glob("/boot/vmlinuz-*")
              if os.path.isdir("/lib/modules/" + i.removeprefix("/boot/vmlinuz-"))]  # fmt: skip
    assert images, "no kernel with modules in /boot: .ci/setup installs linux-image-amd64"
    # by version, not by text: 6.1.0-57 is newer than 6.1.0-9
    image = max(images, key=lambda i: [int(n) for n in re.findall(r"\d+", i)])
    return image, image.removeprefix("/boot/vmlinuz-")


def module_order(version: str, wanted: tuple[str, ...] = MODULES) -> list[str]:
    """The .ko files for `wanted` and their dependencies, dependencies first."""
    order: list[str] = []

    def visit(name: str) -> None:
        fields = ["-k", version, "-F"]
        path = subprocess.run(["modinfo", *fields, "filename", name], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        if path in order or path == "(builtin)":
            return
        deps = subprocess.run(["modinfo", *fields, "depends", name], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        for dep in filter(None, deps.split(",")):
            visit(dep)
        if path not in order:
            order.append(path)

    for name in wanted:
        visit(name)
    return order


def build_initramfs(work: Path, version: str) -> Path:
    """A newc cpio archive with busybox, the modules and /init."""
    tree = work / "initramfs"
    for sub in ("bin", "modules", "proc", "sys", "dev"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, tree / "bin" / "busybox")
    names = []
    for path in module_order(version):
        shutil.copy(path, tree / "modules" / Path(path).name)
        names.append(Path(path).name)
    (tree / "modules.order").write_text("\n".join(names) + "\n")
    (tree / "init").write_text(INIT)
    (tree / "init").chmod(0o755)
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    image = work / "initramfs.cpio"
    with open(image, "wb") as out:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=tree, check=True,
                       input="\n".join(files).encode(), stdout=out)  # fmt: skip
    return image


def run_in_guest(work: Path, command: str, *, cwd: str = "/", memory_mib: int = 4096,
                 timeout: float = 900) -> GuestRun:  # fmt: skip
    """Boot the guest, run `command` (a shell line) as root in `cwd`, power off."""
    image, version = kernel()
    initramfs = build_initramfs(work, version)
    results = work / "results"
    results.mkdir()
    (results / "start.sh").write_text(START.format(cwd=shlex.quote(cwd), command=command))
    # Emulated, not KVM: nested KVM on this kind of machine hangs Debian's kernel early in
    # its boot (and fails outright with -cpu host: MSR 0x10a); emulation boots in seconds.
    accel = ["-accel", "tcg,thread=multi", "-cpu", "max"]
    console = work / "console.log"
    append = ("console=ttyS0 panic=-1 quiet rdinit=/init"
              " systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all")  # fmt: skip
    argv = [
        "qemu-system-x86_64", *accel, "-m", str(memory_mib), "-smp", "2",
        "-nographic", "-no-reboot", "-nodefaults", "-serial", f"file:{console}",
        "-kernel", image, "-initrd", str(initramfs), "-append", append,
        "-virtfs", "local,path=/,mount_tag=host,security_model=passthrough,readonly=on,"
                   "multidevs=remap",
        "-virtfs", f"local,path={results},mount_tag=results,security_model=passthrough",
    ]  # fmt: skip
    with open(console, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            ending = f"qemu exit {proc.wait(timeout=timeout)}"
        except subprocess.TimeoutExpired:  # a hung guest: its console says where
            proc.kill()
            ending = f"killed after {timeout:g} s, qemu exit {proc.wait()}"
    status_file = results / "status"
    status = int(status_file.read_text()) if status_file.exists() else None
    out = (results / "stdout").read_text(errors="replace") if status is not None else ""
    err = (results / "stderr").read_text(errors="replace") if status is not None else ""
    return GuestRun(status, out, err, console.read_text(errors="replace") + f"\n[{ending}]")
