"""The release a user can verify: SHA256SUMS, its ssh-keygen signature, the SPDX SBOM
(checked by spdx-tools, not by our code), the SLSA provenance, and what the single file
carries for them (bundle/files.tsv, the embedded SBOM, the vendored zstandard blob)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import HOST_PYTHON, ROOT, needs_root, run_app, without_host_libzstd

NAMESPACE = "auto-review-release@v1"  # what README's "Verify the download" names
PRINCIPAL = "release@auto-review.test"


def keygen(path: Path) -> Path:
    """A fresh ed25519 key pair (no passphrase); returns the private key."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)  # fmt: skip
    return path


def build(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    cmd = [sys.executable, str(ROOT / "build.py"), "--out", str(out), "--zstd-level", "1"]
    return subprocess.run([*cmd, *extra], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keygen(tmp_path_factory.mktemp("key") / "release_key")


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, key: Path) -> Path:
    """A signed release directory, built for real."""
    out = tmp_path_factory.mktemp("release") / "auto-review"
    result = build(out, "--sign", str(key))
    assert result.returncode == 0, result.stderr
    return out.parent


def allowed_signers(path: Path, key: Path) -> Path:
    """The allowed-signers line README publishes, for `key`'s public half."""
    pub = (key.with_suffix(".pub") if key.suffix else Path(f"{key}.pub")).read_text().split()
    path.write_text(f'{PRINCIPAL} namespaces="{NAMESPACE}" {pub[0]} {pub[1]}\n')
    return path


def verify(sums: Path, signers: Path) -> subprocess.CompletedProcess[str]:
    with open(sums, "rb") as fh:
        return subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", PRINCIPAL,
             "-n", NAMESPACE, "-s", f"{sums}.sig"],
            stdin=fh, capture_output=True, text=True,
        )  # fmt: skip


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_release_files_are_listed(release: Path) -> None:
    names = sorted(p.name for p in release.iterdir())
    assert names == ["SHA256SUMS", "SHA256SUMS.sig", "auto-review",
                     "auto-review.provenance.json", "auto-review.service",
                     "auto-review.spdx.json"]  # fmt: skip
    listed = [line.split("  ", 1)[1] for line in (release / "SHA256SUMS").read_text().splitlines()]
    assert listed == ["auto-review", "auto-review.provenance.json", "auto-review.service",
                      "auto-review.spdx.json"]  # fmt: skip
    # the unit README's operator steps install: a release needs no source tree
    unit = ROOT / "deploy" / "systemd" / "auto-review.service"
    assert (release / "auto-review.service").read_bytes() == unit.read_bytes()


def test_sha256sum_check_passes_then_fails_on_one_flipped_byte(
    release: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(release, tmp_path / "dl")
    ok = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=copy, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "auto-review: OK" in ok.stdout
    flip_byte(copy / "auto-review")
    bad = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=copy, capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 1
    assert "auto-review: FAILED" in bad.stdout


def test_signature_verifies_with_the_release_key_only(
    release: Path, key: Path, tmp_path: Path
) -> None:
    sums = release / "SHA256SUMS"
    good = verify(sums, allowed_signers(tmp_path / "allowed", key))
    assert good.returncode == 0, good.stderr
    assert f'Good "{NAMESPACE}" signature for {PRINCIPAL}' in good.stdout + good.stderr

    other = keygen(tmp_path / "other_key")
    assert verify(sums, allowed_signers(tmp_path / "allowed-other", other)).returncode != 0

    changed = tmp_path / "SHA256SUMS"
    changed.write_bytes(sums.read_bytes().replace(b"  auto-review\n", b"  auto-reviev\n", 1))
    shutil.copy(f"{sums}.sig", f"{changed}.sig")
    assert changed.read_bytes() != sums.read_bytes()
    assert verify(changed, allowed_signers(tmp_path / "allowed", key)).returncode != 0


def test_signature_is_not_valid_in_another_namespace(
    release: Path, key: Path, tmp_path: Path
) -> None:
    signers = allowed_signers(tmp_path / "allowed", key)
    with open(release / "SHA256SUMS", "rb") as fh:
        result = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", PRINCIPAL, "-n", "git",
             "-s", str(release / "SHA256SUMS.sig")], stdin=fh, capture_output=True,
        )  # fmt: skip
    assert result.returncode != 0


def test_sign_with_a_missing_key_is_one_line(tmp_path: Path) -> None:
    result = build(tmp_path / "auto-review", "--sign", str(tmp_path / "nokey"))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("build.py: error: --sign ") and "no such key file" in line


def test_sbom_is_valid_spdx(release: Path) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    document = parse_file(str(release / "auto-review.spdx.json"))
    messages = validate_full_spdx_document(document)
    assert [m.validation_message for m in messages] == []
    assert document.creation_info.spdx_version == "SPDX-2.3"


def dpkg_owner(path: str) -> tuple[str, str]:
    """(package, version) that dpkg says owns a host path (or its merged-/usr twin)."""
    for candidate in (path, path.removeprefix("/usr")):
        proc = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
        if proc.returncode == 0:
            package = proc.stdout.split(":", 1)[0].split(",")[0].strip()
            version = subprocess.run(
                ["dpkg-query", "-W", "-f", "${Version}", package],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            return package, version
    raise AssertionError(f"dpkg owns neither {path} nor its twin")


def test_sbom_names_where_git_python_and_libcurl_came_from(release: Path) -> None:
    sbom = json.loads((release / "auto-review.spdx.json").read_text())
    files = {f["fileName"]: f["SPDXID"] for f in sbom["files"]}
    packages = {p["SPDXID"]: p for p in sbom["packages"]}
    container = {
        r["relatedSpdxElement"]: r["spdxElementId"]
        for r in sbom["relationships"]
        if r["relationshipType"] == "CONTAINS"
    }
    libcurl = [n for n in files if n.startswith("./rootfs/usr/lib/") and "/libcurl" in n]
    assert libcurl, "the rootfs ships libcurl (git-remote-http needs it)"
    libpq = [n for n in files if n.startswith("./rootfs/usr/lib/") and "/libpq.so" in n]
    assert libpq, "the rootfs ships libpq (the PostgreSQL job store's driver loads it)"
    python = os.path.realpath("/usr/bin/python3")
    for name in ("./rootfs/usr/bin/git", f"./rootfs{python}", libcurl[0], libpq[0]):
        package = packages[container[files[name]]]
        want = dpkg_owner(name.removeprefix("./rootfs"))
        assert (package["name"], package["versionInfo"]) == want, name
        assert package["supplier"] == "Organization: Debian"
        assert package["externalRefs"][0]["referenceLocator"].startswith(
            f"pkg:deb/debian/{want[0]}@"
        )
    assert {"python3-psycopg", "libpq5"} <= {p["name"] for p in sbom["packages"]}
    wheels = [p for p in sbom["packages"] if p["name"] == "zstandard"]
    assert len(wheels) == 4 and all(p["checksums"][0]["algorithm"] == "SHA256" for p in wheels)
    cached = {hashlib.sha256(w.read_bytes()).hexdigest()
              for w in (ROOT / "build" / "wheels").glob("zstandard-*.whl")}  # fmt: skip
    assert {p["checksums"][0]["checksumValue"] for p in wheels} <= cached


def test_sbom_file_digests_match_the_payload(release: Path) -> None:
    """Every rootfs file's SHA256 in the SBOM is the one bundle/files.tsv has."""
    sbom = json.loads((release / "auto-review.spdx.json").read_text())
    with zipfile.ZipFile(release / "auto-review") as zf:
        tsv = zf.read("bundle/files.tsv").decode()
    want = {}
    for line in tsv.splitlines():
        kind, _mode, _size, digest, path = line.split("\t", 4)
        if kind in ("file", "hardlink"):
            want[f"./rootfs/{path}"] = digest
    got = {
        f["fileName"]: next(
            c["checksumValue"] for c in f["checksums"] if c["algorithm"] == "SHA256"
        )
        for f in sbom["files"]
        if f["fileName"].startswith("./rootfs/")
    }
    assert got == want


def test_provenance_subject_is_the_sha256sum_of_the_file(release: Path) -> None:
    statement = json.loads((release / "auto-review.provenance.json").read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    out = subprocess.run(["sha256sum", "auto-review", "auto-review.spdx.json"], cwd=release,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    want = {name: {"sha256": digest} for digest, name in (line.split("  ") for line in
            out.splitlines())}  # fmt: skip
    assert {s["name"]: s["digest"] for s in statement["subject"]} == want
    definition = statement["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["command"][:2] == ["python3", "build.py"]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    assert definition["resolvedDependencies"][0]["digest"] == {"gitCommit": commit}


def test_two_builds_give_the_same_release_files(release: Path, tmp_path: Path) -> None:
    """Unsigned this time: everything but the signature is byte-identical."""
    out = tmp_path / "again" / "auto-review"
    result = build(out)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.parent.iterdir())
    assert "SHA256SUMS.sig" not in names
    for name in names:
        assert (out.parent / name).read_bytes() == (release / name).read_bytes(), name


def test_bundle_sbom_prints_the_embedded_sbom(release: Path) -> None:
    result = subprocess.run([HOST_PYTHON, "-I", "-S", str(release / "auto-review"), "bundle",
                             "sbom"], capture_output=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == (release / "auto-review.spdx.json").read_bytes()


def test_bootstrap_is_the_launcher_module(release: Path) -> None:
    with zipfile.ZipFile(release / "auto-review") as zf:
        main = zf.read("__main__.py").decode()
        embedded = zf.read("launcher/_embedded.py").decode()
    code_id = embedded.rsplit("CODE_ID = ", 1)[1].strip().strip("'")
    source = (ROOT / "launcher" / "bootstrap.py").read_text()
    assert source.count('CODE_ID = "@CODE_ID@"\n') == 1
    assert main == source.replace("@CODE_ID@", code_id)


def test_files_list_is_what_the_unpack_writes(release: Path, tmp_path: Path) -> None:
    """bundle/files.tsv (build) and files.tsv (written by a real unpack) are the same bytes,
    and the manifest's files_digest names them."""
    app = release / "auto-review"
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("AUTO_REVIEW_BUNDLE", None)
    run_app(app, "cache", "prepare", env=env, check=True)
    with zipfile.ZipFile(app) as zf:
        built = zf.read("bundle/files.tsv")
        manifest = json.loads(zf.read("bundle/bundle.json"))
    [unpacked] = (tmp_path / "cache" / "v1" / "bundles").glob("sha256-*/files.tsv")
    assert built == unpacked.read_bytes()
    assert manifest["files_digest"] == "sha256:" + hashlib.sha256(built).hexdigest()
    assert len(built.splitlines()) == manifest["file_count"]


def repack(app: Path, out: Path, edit: dict[str, bytes]) -> Path:
    """A copy of the single file with some members' bytes replaced (a broken download)."""
    with zipfile.ZipFile(app) as src, open(out, "wb") as fh:
        fh.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(fh, "w") as dst:
            for info in src.infolist():
                dst.writestr(info, edit.get(info.filename, src.read(info)))
    return out


def test_vendor_blob_holds_every_abi_once(release: Path) -> None:
    with zipfile.ZipFile(release / "auto-review") as zf:
        names = zf.namelist()
        index = json.loads(zf.read("_vendor/zstandard.json"))
        blob = zf.getinfo("_vendor/zstandard.xz")
    assert [n for n in names if n.startswith("_vendor/")] == [
        "_vendor/zstandard.json", "_vendor/zstandard.xz"]  # fmt: skip
    assert blob.compress_type == zipfile.ZIP_STORED  # xz already; deflate would only add
    abis = sorted(f["abi"] for f in index["files"] if f["abi"])
    assert [a.split("-")[0] for a in abis] == [".cpython", ".cpython", ".cpython", ".cpython"]
    assert [a.split("-")[1] for a in abis] == ["310", "311", "312", "313"]
    assert blob.file_size < 0.15 * index["size"]  # the four near-identical copies share bytes


@needs_root
def test_damaged_vendor_blob_is_refused(release: Path, tmp_path: Path) -> None:
    """A flipped byte in the blob, on a host without libzstd (where the blob's decoder is
    needed): refused before anything lands in the cache, exit 65."""
    app = release / "auto-review"
    with zipfile.ZipFile(app) as zf:
        blob = bytearray(zf.read("_vendor/zstandard.xz"))
    blob[len(blob) // 2] ^= 0x40
    bad = repack(app, tmp_path / "auto-review", {"_vendor/zstandard.xz": bytes(blob)})
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(tmp_path / "cache"))
    # -S: no installed zstandard to fall back on, as on a bare host
    result = subprocess.run([*without_host_libzstd(), HOST_PYTHON, "-S", str(bad), "cache",
                             "prepare"], env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 65, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "_vendor/zstandard.xz does not match its index" in line
    vendor = tmp_path / "cache" / "v1" / "vendor"
    # only the (empty) publish lock may be left beside where the module would have gone
    assert not vendor.exists() or [n for n in os.listdir(vendor) if not n.endswith(".lock")] == []


@pytest.mark.parametrize(
    ("path", "name", "version"),
    [
        ("nix/store/" + "a" * 32 + "-git-minimal-2.47.2/bin/git", "git-minimal", "2.47.2"),
        ("nix/store/" + "b" * 32 + "-python3-3.11.11/lib/libpython3.11.so", "python3", "3.11.11"),
        ("nix/store/" + "c" * 32 + "-glibc-2.40-66/lib/libc.so.6", "glibc", "2.40-66"),
        ("nix/store/" + "d" * 32 + "-cacert/etc/ca-bundle.crt", "cacert", "NOASSERTION"),
    ],
)
def test_nix_store_paths_name_their_package(path: str, name: str, version: str) -> None:
    """Under Nix the SBOM's packages are the store paths files live under."""
    from buildsys.origins import nix_package

    package = nix_package(path)
    assert package is not None
    assert (package.name, package.version) == (name, version)
    assert package.source == "/" + "/".join(path.split("/")[:3])
    assert nix_package("usr/bin/git") is None


def test_provenance_takes_the_commit_a_nix_build_passes(tmp_path: Path) -> None:
    """The Nix source has no .git: flake.nix passes the flake's revision instead."""
    out = tmp_path / "auto-review"
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000", AUTO_REVIEW_SOURCE_COMMIT="f" * 40)
    cmd = [sys.executable, str(ROOT / "build.py"), "--out", str(out), "--zstd-level", "1"]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    statement = json.loads((tmp_path / "auto-review.provenance.json").read_text())
    source = statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]
    assert source["digest"] == {"gitCommit": "f" * 40}
    assert source["uri"] == "git+local:auto-review"


def readme_verify_commands() -> str:
    """The shell block of README's "Verify the download" section, verbatim."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Verify the download\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_readme_verify_commands_accept_the_release_and_refuse_a_changed_file(
    release: Path, key: Path, tmp_path: Path
) -> None:
    """The documented commands, run as written (the key placeholder replaced by the test
    key): they pass on the release and stop at sha256sum when one byte differs."""
    pub = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    script = readme_verify_commands().replace("ssh-ed25519 AAAA...", pub)
    script = script.replace("release@auto-review", PRINCIPAL)
    assert "ssh-keygen -Y verify" in script and "sha256sum -c SHA256SUMS" in script
    copy = shutil.copytree(release, tmp_path / "dl")
    ok = subprocess.run(["bash", "-e", "-c", script], cwd=copy, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    flip_byte(copy / "auto-review")
    bad = subprocess.run(["bash", "-e", "-c", script], cwd=copy, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "auto-review: FAILED" in bad.stdout
