"""`bundle export`: the embedded rootfs as an OCI image, checked with skopeo and umoci.

The image's only layer must be the embedded rootfs (same diff_id), the layout must
be accepted by real tools, two exports must be byte-identical, and a damaged blob
must be refused. Also: the Kubernetes manifests parse and agree on names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_app

K8S = ROOT / "deploy" / "kubernetes"


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache))
    env.pop("AUTO_REVIEW_BUNDLE", None)
    return env


def _export(app: Path, cache: Path, *args: str) -> None:
    proc = run_app(app, "bundle", "export", *args, env=_env(cache))
    assert proc.returncode == 0, proc.stderr


def _manifest(app: Path, cache: Path) -> dict:
    proc = run_app(app, "bundle", "info", "--json", env=_env(cache), check=True)
    return json.loads(proc.stdout)


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def _skopeo(*args: str) -> dict:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image")


@pytest.fixture(scope="module")
def oci(app: Path, work: Path) -> Path:
    """One gzip OCI export, shared by the read-only tests."""
    out = work / "oci"
    _export(app, work / "cache", "--oci", str(out))
    return out


@pytest.fixture(scope="module")
def bundle_manifest(app: Path, work: Path) -> dict:
    return _manifest(app, work / "cache")


def _walk(root: Path) -> dict[str, tuple[str, str | None, int]]:
    """rel path -> (type, sha256 or symlink target, permission bits)."""
    found: dict[str, tuple[str, str | None, int]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("l", os.readlink(path), 0)
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("d", None, mode)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    found[rel] = ("f", hashlib.sha256(fh.read()).hexdigest(), mode)
            else:
                found[rel] = ("?", None, mode)
    return found


def _launcher_mode(kind: str, mode: int) -> int:
    """The launcher's extraction normalises modes (launcher/cache/extract.py): directories via
    `dir_mode` (owner rwx, no setgid, world-write only with the sticky bit), files
    `(mode & 0o755) | 0o400`. umoci --rootless keeps the tar's modes, so its modes are
    mapped through the same rule before comparing (the differences seen: /proc and
    /sys are 0555 in the tar, 0755 in the cache). Ownership is not compared: both
    unpack as the calling user."""
    from launcher.cache.extract import dir_mode

    if kind == "d":
        return dir_mode(mode)
    if kind == "f":
        return (mode & 0o755) | 0o400
    return mode


def test_skopeo_inspect_accepts_layout(oci: Path, bundle_manifest: dict) -> None:
    index = json.loads((oci / "index.json").read_text())
    (ref,) = index["manifests"]
    assert ref["annotations"]["org.opencontainers.image.ref.name"] == bundle_manifest["version"]
    manifest = json.loads(_blob(oci, ref["digest"]).read_bytes())
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"

    info = _skopeo("inspect", f"oci:{oci}")
    assert info["Digest"] == ref["digest"]
    assert info["Layers"] == [layer["digest"]]
    assert info["Architecture"] == bundle_manifest["arch"]
    assert "AUTO_REVIEW_ISOLATION=bare" in info["Env"]

    config = _skopeo("inspect", "--config", f"oci:{oci}")
    proc = bundle_manifest["process"]
    assert config["config"]["Entrypoint"] == proc["args"]
    assert config["config"]["User"] == f"{proc['user']['uid']}:{proc['user']['gid']}"
    assert config["config"]["Volumes"] == {"/var/lib/auto-review": {}}
    assert config["config"]["Cmd"] == ["serve"]  # `podman run IMAGE` serves
    # the diff_id equality: the image's layer IS the embedded rootfs
    assert config["rootfs"]["diff_ids"] == [bundle_manifest["diff_id"]]


def test_state_dir_in_the_layer_belongs_to_the_gateway_user(
    oci: Path, bundle_manifest: dict
) -> None:
    """A fresh volume copies the image dir's owner and mode: it must be the gateway's."""
    import gzip
    import tarfile

    index = json.loads((oci / "index.json").read_text())
    manifest = json.loads(_blob(oci, index["manifests"][0]["digest"]).read_bytes())
    layer = _blob(oci, manifest["layers"][0]["digest"])
    with gzip.open(layer) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            if member.name.rstrip("/") == "var/lib/auto-review":
                break
        else:
            raise AssertionError("no var/lib/auto-review in the layer")
    user = bundle_manifest["process"]["user"]
    assert member.isdir()
    assert (member.uid, member.gid) == (user["uid"], user["gid"])
    assert member.mode & 0o777 == 0o700


def test_gzip_layer_decompresses_to_diff_id(oci: Path, bundle_manifest: dict) -> None:
    import gzip

    manifest_digest = json.loads((oci / "index.json").read_text())["manifests"][0]["digest"]
    layer = json.loads(_blob(oci, manifest_digest).read_bytes())["layers"][0]
    sha = hashlib.sha256()
    with gzip.open(_blob(oci, layer["digest"])) as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    assert "sha256:" + sha.hexdigest() == bundle_manifest["diff_id"]


def test_umoci_unpack_equals_cache_rootfs(
    app: Path, oci: Path, work: Path, bundle_manifest: dict
) -> None:
    cache = work / "cache"
    run_app(app, "cache", "prepare", env=_env(cache), check=True)
    dirname = bundle_manifest["digest"].replace(":", "-")
    cached = cache / "v1" / "bundles" / dirname / "rootfs"
    assert cached.is_dir()

    target = work / "umoci-bundle"
    ref = f"{oci}:{bundle_manifest['version']}"
    proc = subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", ref, str(target)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr

    ours, theirs = _walk(cached), _walk(target / "rootfs")
    assert sorted(ours) == sorted(theirs)
    assert len(ours) == bundle_manifest["file_count"]
    for rel, (kind, content, mode) in theirs.items():
        expected = ours[rel]
        assert (kind, content) == expected[:2], rel
        assert _launcher_mode(kind, mode) == expected[2], (rel, oct(mode), oct(expected[2]))


def test_export_twice_is_byte_identical(app: Path, oci: Path, work: Path) -> None:
    again = work / "oci-again"
    _export(app, work / "cache", "--oci", str(again))

    def files(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).digest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert files(oci) == files(again)
    assert (oci / "index.json").read_bytes() == (again / "index.json").read_bytes()


def test_corrupted_blob_is_refused(app: Path, oci: Path, work: Path) -> None:
    bad = work / "oci-bad"
    shutil.copytree(oci, bad)
    manifest_digest = json.loads((bad / "index.json").read_text())["manifests"][0]["digest"]
    layer = json.loads(_blob(bad, manifest_digest).read_bytes())["layers"][0]
    path = _blob(bad, layer["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    proc = subprocess.run(
        ["skopeo", "copy", f"oci:{bad}", f"dir:{work / 'copied-bad'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    # the intact layout copies fine (the refusal is the digest, not the tool)
    ok = subprocess.run(
        ["skopeo", "copy", f"oci:{oci}", f"dir:{work / 'copied-ok'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr


def test_zstd_layer_is_the_embedded_blob(app: Path, work: Path, bundle_manifest: dict) -> None:
    out = work / "oci-zstd"
    _export(app, work / "cache", "--oci", str(out), "--zstd")
    ref = json.loads((out / "index.json").read_text())["manifests"][0]
    (layer,) = json.loads(_blob(out, ref["digest"]).read_bytes())["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert layer["digest"] == bundle_manifest["digest"]
    assert layer["size"] == bundle_manifest["compressed_size"]
    assert (
        hashlib.sha256(_blob(out, layer["digest"]).read_bytes()).hexdigest()
        == (bundle_manifest["digest"].split(":", 1)[1])
    )
    assert _skopeo("inspect", f"oci:{out}")["Layers"] == [bundle_manifest["digest"]]


def test_docker_archive_accepted(app: Path, work: Path, bundle_manifest: dict) -> None:
    out = work / "image.tar"
    _export(app, work / "cache", "--docker-archive", str(out))
    info = _skopeo("inspect", f"docker-archive:{out}")
    assert info["Layers"] == [bundle_manifest["diff_id"]]
    assert "AUTO_REVIEW_ISOLATION=bare" in info["Env"]
    config = _skopeo("inspect", "--config", f"docker-archive:{out}")
    assert config["rootfs"]["diff_ids"] == [bundle_manifest["diff_id"]]
    again = work / "image-again.tar"
    _export(app, work / "cache", "--docker-archive", str(again))
    assert out.read_bytes() == again.read_bytes()


def test_refuses_non_empty_target(app: Path, work: Path) -> None:
    target = work / "busy"
    target.mkdir()
    (target / "keep").write_text("x")
    proc = run_app(app, "bundle", "export", "--oci", str(target), env=_env(work / "cache"))
    assert proc.returncode == 2
    assert "not empty" in proc.stderr and "--" in proc.stderr
    assert sorted(os.listdir(target)) == ["keep"]


def _k8s() -> dict[str, dict]:
    docs: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        (doc,) = list(yaml.safe_load_all(path.read_text()))
        docs[doc["kind"]] = doc
    return docs


def test_kubernetes_manifests_parse_and_agree() -> None:
    docs = _k8s()
    assert {"Deployment", "Service", "PersistentVolumeClaim", "Secret"} <= set(docs)
    deploy, service = docs["Deployment"], docs["Service"]
    pvc, secret = docs["PersistentVolumeClaim"], docs["Secret"]
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["serve"]
    secret_refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert secret_refs == {secret["metadata"]["name"]}
    secret_keys = {
        e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e
    }
    assert secret_keys == set(secret["stringData"])
    assert {"WEBHOOK_SECRET", "FORGEJO_BASE_URL", "AR_FORGEJO_TOKEN"} <= secret_keys
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {pvc["metadata"]["name"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/auto-review", "/tmp"} <= mounts
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001 and sc["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    port = container["ports"][0]["containerPort"]
    assert service["spec"]["ports"][0]["targetPort"] in (port, container["ports"][0]["name"])
    bind = {e["name"]: e.get("value") for e in container["env"]}["AR_GATEWAY_BIND"]
    assert bind == f"0.0.0.0:{port}"


def test_kubernetes_replicas_share_a_database_and_roll() -> None:
    docs = {}
    for path in sorted((K8S / "replicas").glob("*.yaml")):
        (doc,) = list(yaml.safe_load_all(path.read_text()))
        docs[doc["kind"]] = doc
    deploy, pdb, secret = docs["Deployment"], docs["PodDisruptionBudget"], docs["Secret"]
    single = _k8s()["Deployment"]
    assert deploy["spec"]["replicas"] >= 3
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["AR_QUEUE_URL"] == {"name": secret["metadata"]["name"], "key": "AR_QUEUE_URL"}
    assert set(refs) == set(secret["stringData"])
    assert secret["stringData"]["AR_QUEUE_URL"].startswith("postgresql://")
    pod = deploy["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]  # no shared file
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    selector = pdb["spec"]["selector"]["matchLabels"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in selector.items())
    assert pdb["spec"]["maxUnavailable"] < deploy["spec"]["replicas"]
    # the rest is the single replica's: same image, user, limits and hardening
    (one,) = single["spec"]["template"]["spec"]["containers"]
    for key in ("image", "args", "securityContext", "resources", "ports", "volumeMounts"):
        assert container[key] == one[key], key
