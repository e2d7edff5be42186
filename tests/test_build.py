"""Contract tests on the real single file: what the rootfs holds, what it must not,
that every ELF loads from inside it, that builds are reproducible, and that the
manifest tells the truth."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import zstandard
from conftest import HOST_PYTHON, ROOT, build_app, needs_root, run_app

from buildsys.elf import find_library, is_elf, read_elf, resolve_in_root
from buildsys.recipe import Recipe
from buildsys.zipapp import SHEBANG

RECIPE = Recipe.load()


@pytest.fixture(scope="module")
def payload(app: Path) -> tuple[bytes, bytes, dict]:
    """(compressed payload, tar, manifest) read straight from the single file."""
    with zipfile.ZipFile(app) as zf:
        compressed = zf.read("bundle/rootfs.tar.zst")
        manifest = json.loads(zf.read("bundle/bundle.json"))
    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed)).read()
    return compressed, tar, manifest


@pytest.fixture(scope="module")
def members(payload: tuple[bytes, bytes, dict]) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(payload[1])) as tf:
        return tf.getmembers()


@pytest.fixture(scope="module")
def rootfs(payload: tuple[bytes, bytes, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tar unpacked by the system tar (a reference extractor, not ours)."""
    root = tmp_path_factory.mktemp("rootfs")
    subprocess.run(["tar", "-x", "-C", str(root)], input=payload[1], check=True)
    return root


def test_required_paths_present(rootfs: Path) -> None:
    for path in RECIPE.required:
        assert resolve_in_root(rootfs, path), f"missing {path}"


def test_no_forbidden_names(members: list[tarfile.TarInfo]) -> None:
    forbidden = RECIPE.forbidden
    hits = [m.name for m in members if not m.isdir() and m.name.rsplit("/", 1)[-1] in forbidden]
    assert hits == []


def test_forbidden_list_covers_the_issue(members: list[tarfile.TarInfo]) -> None:
    must = {"sh", "bash", "dash", "ash", "zsh", "busybox", "toybox", "ls", "cat", "cp", "mv",
            "rm", "env", "chmod", "id", "perl", "gdb", "strace", "ltrace", "apt", "dpkg", "pip",
            "gcc", "cc"}  # fmt: skip
    assert must <= RECIPE.forbidden
    assert not any(m.name.startswith(("bin/sh", "usr/bin/sh", "usr/bin/perl")) for m in members)


def test_every_elf_loads_from_inside(rootfs: Path) -> None:
    search = RECIPE.section("elf")["search"]
    checked = 0
    for path in rootfs.rglob("*"):
        if path.is_symlink() or not path.is_file() or not is_elf(path):
            continue
        inroot = "/" + path.relative_to(rootfs).as_posix()
        info = read_elf(path)
        if info.interpreter:
            assert resolve_in_root(rootfs, info.interpreter), f"{inroot}: no interpreter"
        for soname in info.needed:
            found = find_library(rootfs, soname, os.path.dirname(inroot), info, search)
            assert found, f"{inroot} needs {soname}, not in the rootfs"
        checked += 1
    assert checked >= 10  # git, git-remote-http, python, libc, lib-dynload modules...


def test_no_symlink_resolves_outside(members: list[tarfile.TarInfo], rootfs: Path) -> None:
    links = [m for m in members if m.issym()]
    assert links, "the rootfs has symlinks (python3 -> python3.11, /lib64 ...)"
    for m in links:
        assert not m.linkname.startswith("/"), f"absolute symlink {m.name} -> {m.linkname}"
        assert resolve_in_root(rootfs, "/" + m.name), f"{m.name} -> {m.linkname} escapes"


def test_no_setuid_and_only_tmp_world_writable(members: list[tarfile.TarInfo]) -> None:
    assert [m.name for m in members if m.mode & 0o6000] == []
    writable = [m.name for m in members if not m.issym() and m.mode & 0o002]
    assert writable == ["tmp"]
    assert next(m for m in members if m.name == "tmp").mode & 0o1000


def test_tar_is_normalized(
    members: list[tarfile.TarInfo], payload: tuple[bytes, bytes, dict]
) -> None:
    epoch = 1700000000
    # everything is root's except the state dir, the gateway's own (10001, 0700), so that
    # a fresh volume on it in podman or Docker is writable by the gateway
    state = [m for m in members if m.name == "var/lib/auto-review"]
    assert [(m.uid, m.gid, m.mode & 0o777, m.isdir()) for m in state] == [
        (10001, 10001, 0o700, True)
    ]
    others = [m for m in members if m.name != "var/lib/auto-review"]
    assert all(m.uid == 0 and m.gid == 0 for m in others)
    assert all(m.uname == "" and m.gname == "" for m in members)
    assert all(m.mtime == epoch for m in members)
    assert all("atime" not in m.pax_headers and "ctime" not in m.pax_headers for m in members)
    names = [m.name for m in members]
    assert len(names) == len(set(names))
    parents = {n.rsplit("/", 1)[0] for n in names if "/" in n}
    seen: set[str] = set()
    for n in names:  # every parent directory comes before its children
        if "/" in n:
            assert n.rsplit("/", 1)[0] in seen, n
        seen.add(n)
    assert parents <= seen


def test_manifest_tells_the_truth(
    payload: tuple[bytes, bytes, dict], members: list[tarfile.TarInfo]
) -> None:
    compressed, tar, manifest = payload
    assert manifest["digest"] == "sha256:" + hashlib.sha256(compressed).hexdigest()
    assert manifest["diff_id"] == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert manifest["compressed_size"] == len(compressed)
    assert manifest["tar_size"] == len(tar)
    assert manifest["file_count"] == len(members)
    regular = [m for m in members if m.isreg()]
    assert manifest["unpacked_size"] == sum(m.size for m in regular)
    assert manifest["largest_file"] == max(m.size for m in regular)
    assert manifest["arch"] == {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
    assert manifest["process"]["user"] == {"name": "auto-review", "uid": 10001, "gid": 10001}
    assert manifest["process"]["args"][0] == "/usr/bin/python3"


# What `python3 FILE ARGS...` does with a zipapp (Modules/main.c: the file first on
# sys.path, then runpy runs its __main__), with every compile of a file recorded.
RUN_AS_MAIN = """
import sys
compiled = []
sys.addaudithook(lambda ev, args: ev == "compile" and args[1] != "<string>"
                 and compiled.append(str(args[1])))
app, *rest = sys.argv[1:]
sys.path.insert(0, app)
sys.argv = [app, *rest]
import atexit, runpy
atexit.register(lambda: print("COMPILED", compiled, file=sys.stderr))
runpy._run_module_as_main("__main__", alter_argv=False)
"""


@pytest.mark.parametrize("args", [("--version",), ("-q", "cache", "prepare")])
def test_a_start_under_the_build_python_compiles_nothing(
    app: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """The single file carries checked bytecode for __main__ and the launcher, made by
    the host's python3: neither a cold nor a warm start compiles a file."""
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(tmp_path / "cache"))
    for _ in ("cold", "warm"):
        result = subprocess.run([HOST_PYTHON, "-I", "-S", "-c", RUN_AS_MAIN, str(app), *args],
                                env=env, capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "COMPILED []" in result.stderr, result.stderr


def test_payload_is_stored_and_zip_is_deterministic(app: Path) -> None:
    assert app.read_bytes().startswith(SHEBANG)  # its command: tests/test_preamble.py
    with zipfile.ZipFile(app) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    # the payload first, right after the shebang, the file list right after it (a cold
    # start finds each with one pread), both stored, and the launcher's bytecode stored
    assert names[:2] == ["bundle/rootfs.tar.zst", "bundle/files.tsv"]
    assert names[2:] == sorted(names[2:])
    assert infos[0].header_offset == len(SHEBANG)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert infos[0].compress_type == infos[1].compress_type == zipfile.ZIP_STORED
    assert {i.compress_type for i in infos if i.filename.endswith(".pyc")} == {zipfile.ZIP_STORED}
    assert [n for n in names if n.startswith("_vendor/")] == [
        "_vendor/zstandard.json",
        "_vendor/zstandard.xz",
    ]  # every ABI's zstandard in one blob (tests/test_release.py opens it)
    assert "launcher/cli/main.py" in names and "__main__.py" in names


def test_bundle_info_runs_on_a_bare_system_python(
    app: Path, payload: tuple[bytes, bytes, dict]
) -> None:
    result = subprocess.run([HOST_PYTHON, "-I", "-S", str(app), "bundle", "info", "--json"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == payload[2]
    text = run_app(app, "bundle", "info")
    assert payload[2]["digest"] in text.stdout


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    first = build_app(tmp_path / "a" / "auto-review", level=1)
    later = time.time() + 3600
    for path in [*(ROOT / "payload").rglob("*"), *(ROOT / "launcher").rglob("*.py")]:
        os.utime(path, (later, later))  # every source file gets a new mtime
    second = build_app(tmp_path / "b" / "auto-review", level=1)
    assert first.read_bytes() == second.read_bytes()
    names = sorted(p.name for p in first.parent.iterdir())
    assert names == sorted(p.name for p in second.parent.iterdir())
    assert "SHA256SUMS" in names and "auto-review.spdx.json" in names
    for name in names:  # the release files beside it too
        assert (first.parent / name).read_bytes() == (second.parent / name).read_bytes(), name


def run_build(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    return subprocess.run([sys.executable, str(ROOT / "build.py"), *args],
                          capture_output=True, text=True, env=env)  # fmt: skip


def test_missing_binary_is_named(tmp_path: Path) -> None:
    recipe = (ROOT / "payload" / "rootfs.toml").read_text()
    bad = tmp_path / "rootfs.toml"
    bad.write_text(recipe.replace('git = "/usr/bin/git"', 'git = "/usr/bin/no-such-git"'))
    result = run_build("--recipe", str(bad), "--out", str(tmp_path / "x"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "build.py: error: missing executable for role 'git': /usr/bin/no-such-git"
    ]


NATIVE_LINE = 'native = ["cryptography", "_cffi_backend", "psycopg", "typing_extensions"]'


def test_missing_native_package_is_named(tmp_path: Path) -> None:
    recipe = (ROOT / "payload" / "rootfs.toml").read_text()
    assert NATIVE_LINE in recipe
    bad = tmp_path / "rootfs.toml"
    bad.write_text(recipe.replace(NATIVE_LINE, 'native = ["no_such_native_pkg"]'))
    result = run_build("--recipe", str(bad), "--out", str(tmp_path / "x"))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("build.py: error: native package no_such_native_pkg is not in ")
    assert "install it for that interpreter" in line
    assert not (tmp_path / "x").exists()


def test_native_packages_without_a_site_dir_are_refused(tmp_path: Path) -> None:
    # no fallback to the interpreter's own site list, which starts with /usr/local
    recipe = (ROOT / "payload" / "rootfs.toml").read_text()
    site_line = 'site_dirs = ["/usr/lib/python3/dist-packages"]\n'
    assert site_line in recipe
    bad = tmp_path / "rootfs.toml"
    bad.write_text(recipe.replace(site_line, ""))
    result = run_build("--recipe", str(bad), "--out", str(tmp_path / "x"))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("build.py: error: the recipe's [python] native needs site_dirs")
    assert not (tmp_path / "x").exists()


def test_native_package_importing_an_unlisted_one_is_refused(tmp_path: Path) -> None:
    # shipped whole, a native package must not lean on another site package the rootfs
    # would lack: the build names the import instead of shipping a broken package
    site = tmp_path / "site"
    (site / "natpkg").mkdir(parents=True)
    (site / "natpkg" / "__init__.py").write_text("import helperlib\n")
    (site / "helperlib.py").write_text("VALUE = 1\n")
    recipe = (ROOT / "payload" / "rootfs.toml").read_text()
    bad = tmp_path / "rootfs.toml"
    site_line = 'site_dirs = ["/usr/lib/python3/dist-packages"]'
    assert site_line in recipe
    bad.write_text(
        recipe.replace(NATIVE_LINE, 'native = ["natpkg"]').replace(
            site_line, f'site_dirs = ["{site}"]'
        )
    )
    result = run_build("--recipe", str(bad), "--out", str(tmp_path / "x"))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "a native package imports helperlib" in line and "[python] native" in line


@pytest.mark.parametrize("content", [None, "this is [not toml"])
def test_unreadable_recipe_is_named(tmp_path: Path, content: str | None) -> None:
    recipe = tmp_path / "rootfs.toml"
    if content is not None:
        recipe.write_text(content)
    result = run_build("--recipe", str(recipe), "--out", str(tmp_path / "x"))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert str(recipe) in line


def test_prepared_rootfs_without_required_paths_is_refused(rootfs: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    subprocess.run(["cp", "-a", str(rootfs), str(partial)], check=True)
    (partial / "usr" / "bin" / "git").unlink()
    result = run_build("--rootfs", str(partial), "--out", str(tmp_path / "x"))
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"build.py: error: rootfs {partial} lacks required path /usr/bin/git"
    )
    assert not (tmp_path / "x").exists()


def test_prepared_rootfs_with_a_shell_is_refused(rootfs: Path, tmp_path: Path) -> None:
    shelled = tmp_path / "shelled"
    subprocess.run(["cp", "-a", str(rootfs), str(shelled)], check=True)
    (shelled / "usr" / "bin" / "sh").write_bytes(b"\x7fELF")
    result = run_build("--rootfs", str(shelled), "--out", str(tmp_path / "x"))
    assert result.returncode == 1
    assert "forbidden file /usr/bin/sh" in result.stderr


def test_prepared_rootfs_packs_to_the_same_layer(
    rootfs: Path, tmp_path: Path, payload: tuple[bytes, bytes, dict]
) -> None:
    out = tmp_path / "auto-review"
    result = run_build("--rootfs", str(rootfs), "--out", str(out), "--zstd-level", "3")
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("bundle/bundle.json"))
    assert manifest["diff_id"] == payload[2]["diff_id"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


GATEWAY_PACKAGE = ROOT / "payload" / "gateway" / "auto_review_gateway"
# Every module and subpackage of the gateway, dotted: its stages' packages included.
GATEWAY_MODULES = sorted(
    ".".join(p.relative_to(GATEWAY_PACKAGE).with_suffix("").parts)
    .removesuffix("__init__")
    .rstrip(".")
    for p in GATEWAY_PACKAGE.rglob("*.py")
    if p.stem != "__main__"  # importing it runs the command line
)


@needs_root
def test_every_gateway_module_imports_with_the_rootfs_python(rootfs: Path) -> None:
    """The recipe's exclusions never remove a module the gateway (or a frozen module it
    uses) really imports: each gateway module and each of its stages' packages is imported
    from gateway.pyz by the rootfs's own Python (``-I -S``), and comes from the zip."""
    assert {"web", "jobs", "forges.forgejo", "forges.github", "review.llm", "core"} <= set(
        GATEWAY_MODULES
    )
    code = (
        "import sys, importlib; sys.path.insert(0, '/usr/lib/auto-review/gateway.pyz');"
        " names = ['auto_review_gateway' + ('.' + m if m else '') for m in"
        f" {GATEWAY_MODULES!r}];"
        " mods = [importlib.import_module(n) for n in names];"
        " assert all('gateway.pyz' in (m.__file__ or '') for m in mods), names"
    )
    result = subprocess.run(["chroot", str(rootfs), "/usr/bin/python3", "-I", "-S", "-c", code],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr[-1500:]


@needs_root
def test_the_rootfs_signs_an_app_jwt_with_its_own_cryptography(rootfs: Path) -> None:
    """The gateway's own JWT code, run by the rootfs's Python on the rootfs's native
    packages (found through the .pth the build wrote); the host's cryptography checks
    the signature."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    code = (
        "import sys; sys.path.insert(0, '/usr/lib/auto-review/gateway.pyz');"
        " from auto_review_gateway.forges.github import auth as a;"
        " k = a.load_private_key(sys.stdin.buffer.read()); import cryptography;"
        " print(cryptography.__file__); print(a.app_jwt('4242', k, 1700000000.0))"
    )
    result = subprocess.run(["chroot", str(rootfs), "/usr/bin/python3", "-I", "-S", "-c", code],
                            input=pem, capture_output=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-1500:]
    where, jwt = result.stdout.decode().split()
    pth = rootfs / RECIPE.section("python")["native_site"].lstrip("/") / "native.pth"
    assert where.startswith(tuple(pth.read_text().split()))  # the rootfs's, not a stray copy
    head, body, sig = jwt.split(".")
    pad = lambda t: t + "=" * (-len(t) % 4)  # noqa: E731
    claims = json.loads(base64.urlsafe_b64decode(pad(body)))
    assert claims == {"iat": 1700000000 - 60, "exp": 1700000000 + 540, "iss": "4242"}
    key.public_key().verify(  # raises InvalidSignature on a bad one
        base64.urlsafe_b64decode(pad(sig)),
        f"{head}.{body}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_the_shebang_keeps_the_environments_python_code_out(app: Path, tmp_path: Path) -> None:
    """Run as its shebang runs it, PYTHONPATH's sitecustomize never runs in the launcher
    (-I -S); `python3 FILE` follows the interpreter's own rules and would run it."""
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    ran = tmp_path / "ran"
    (hostile / "sitecustomize.py").write_text(f"open({str(ran)!r}, 'w').write('x')\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AUTO_REVIEW_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(hostile),
    }
    result = subprocess.run([str(app), "--version"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not ran.exists()
    subprocess.run([HOST_PYTHON, str(app), "--version"], env=env, capture_output=True)
    assert ran.exists()  # the same file without the flags: the check can fail
