"""Every config.json the launcher generates keeps the OCI runtime-spec's JSON schema of
the version it names (``ociVersion``), from ``../shared/specs/``: root and rootless,
runc and gVisor, each command's shape, each network mode.

The configs use ``linux.seccomp.defaultErrnoRet`` and ``syscalls[].errnoRet``, which
runtime-spec 1.1.0 added; v1.0.2's schema has neither, so claiming 1.0.2 was wrong.
``specs/oci-runtime`` is the spec's schema at a later commit (``SOURCE``), which keeps
1.1.0's fields: it is the schema the configs are checked against.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import jsonschema
import pytest
import referencing
from conftest import ROOT

from launcher.sandbox import config

SPECS = ROOT.parent / "shared" / "specs"
SCHEMA = SPECS / "oci-runtime"
V1_0_2 = SPECS / "oci-runtime-v1.0.2"


def validator(schema_dir: Path) -> jsonschema.protocols.Validator:
    """The config schema of `schema_dir`, its `defs*.json` and `config-*.json` resolvable
    by their file names, as the spec's own `$ref`s name them."""
    resources = []
    for path in sorted(schema_dir.glob("*.json")):
        doc = json.loads(path.read_text())
        resources.append((path.name, referencing.Resource.from_contents(
            doc, default_specification=referencing.jsonschema.DRAFT4)))  # fmt: skip
    registry = referencing.Registry().with_resources(resources)
    schema = json.loads((schema_dir / "config-schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft4Validator)
    return cls(schema, registry=registry)


MANIFEST = {
    "process": {
        "args": ["/usr/bin/python3", "-I", "-S", "/usr/lib/auto-review/gateway.pyz"],
        "env": ["PATH=/usr/bin", "LANG=C.UTF-8"],
        "cwd": "/",
        "user": {"name": "auto-review", "uid": 10001, "gid": 10001},
    },
    "mounts": [
        {"destination": "/tmp", "type": "tmpfs", "options": ["nosuid", "nodev", "size=256m"]},
        {"destination": "/var/lib/auto-review", "type": "bind", "role": "state"},
    ],
}
COMMANDS = {
    "check": (["check"], None),
    "review --path": (["review", "--path", "/mnt/repo", "--base", "main"], "/srv/src/app"),
    "serve": (["serve"], None),
    "probe": (["probe", "exit", "0"], None),
}


def specs() -> list[tuple[str, config.RunSpec]]:
    """A RunSpec for every combination the launcher builds (launcher/sandbox/run.py)."""
    out = []
    for command, mode, runtime, network in itertools.product(
        COMMANDS, ("root", "rootless", "delegated"), ("runc", "crun", "runsc"), ("isolated", "host")
    ):
        rootless = mode != "root"  # delegated: rootless in a delegated cgroup (cgroup2.py)
        if runtime == "runsc" and rootless:
            continue  # the launcher refuses rootless gVisor
        args, repo = COMMANDS[command]
        gvisor = runtime == "runsc"
        # runsc and rootless crun join the namespaces made first (launcher/sandbox/netfirst.py)
        first = network == "isolated" and (gvisor or (rootless and runtime == "crun"))
        spec = config.RunSpec(
            rootfs="/var/cache/auto-review/v1/bundles/sha256-0/rootfs",
            manifest=MANIFEST,
            args=args,
            env=["PATH=/usr/bin", "AUTO_REVIEW_LIFELINE_FD=3"],
            state_dir="/var/lib/auto-review",
            rootless=rootless,
            resolv_conf="/run/user/1000/auto-review/resolv.conf",
            ca_bundle="/run/user/1000/auto-review/ca.pem" if command == "serve" else None,
            repo_dir=repo,
            host_network=network == "host",
            gvisor=gvisor,
            netns_path="/proc/4242/ns/net" if first else None,
            userns_path="/proc/4242/ns/user" if first and rootless else None,
            cgroup_path="/ar.service/auto-review-4242" if mode == "delegated" else None,
        )
        out.append((f"{command}-{mode}-{runtime}-{network}", spec))
    return out


SPECS_BY_NAME = specs()


@pytest.fixture(scope="module")
def current() -> jsonschema.protocols.Validator:
    return validator(SCHEMA)


@pytest.mark.parametrize(("name", "spec"), SPECS_BY_NAME, ids=[n for n, _ in SPECS_BY_NAME])
def test_every_generated_config_keeps_the_schema_of_its_version(
    name: str, spec: config.RunSpec, current: jsonschema.protocols.Validator
) -> None:
    document = config.build_config(spec)
    assert document["ociVersion"] == config.OCI_VERSION == "1.1.0"
    errors = sorted(current.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def test_the_matrix_covers_each_runtime_mode_command_and_network() -> None:
    names = [name.split("-") for name, _ in SPECS_BY_NAME]
    assert {n[-1] for n in names} == {"isolated", "host"}
    assert {n[-2] for n in names} == {"runc", "crun", "runsc"}
    assert {n[-3] for n in names} == {"root", "rootless", "delegated"}
    assert len(SPECS_BY_NAME) == len(COMMANDS) * (6 + 4 + 4)
    delegated = [config.build_config(s) for n, s in SPECS_BY_NAME if "-delegated-" in n]
    assert delegated and all(d["linux"]["cgroupsPath"] for d in delegated)
    assert all(d["linux"]["resources"]["memory"]["limit"] == 2 << 30 for d in delegated)
    joined = [s for _, s in SPECS_BY_NAME if s.userns_path]
    assert joined and all(s.rootless and not s.host_network for s in joined)


def test_the_schema_can_fail_and_1_0_2_lacks_the_fields_used() -> None:
    """The check is real: a config with a field of the wrong type fails it. And the
    fields the configs use are 1.1.0's: v1.0.2's schema does not know them."""
    document = config.build_config(SPECS_BY_NAME[0][1])
    broken = json.loads(json.dumps(document))
    broken["linux"]["seccomp"]["defaultErrnoRet"] = "EPERM"
    assert list(validator(SCHEMA).iter_errors(broken))
    assert "defaultErrnoRet" in document["linux"]["seccomp"]
    old = " ".join(p.read_text() for p in V1_0_2.glob("*.json"))
    assert "defaultErrnoRet" not in old and "errnoRet" not in old
