"""SLSA v1 provenance: an in-toto Statement naming what was built, from what, and how.

The statement is unsigned (the signature over SHA256SUMS covers it). It is
deterministic: no build start time or host name, and the build command is written
from the parameters that change the output (never --out, whose path only says where
the file lands), so two builds of the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from buildsys.origins import pinned_wheels
from buildsys.recipe import HERE

# URNs, not URLs: docs/release.md describes the build type; nothing is hosted for it.
BUILD_TYPE = "urn:auto-review:buildtype:build.py:v1"
BUILDER_ID = "urn:auto-review:builder:build.py"


def git(*args: str) -> str | None:
    """Output of a git command in the source tree; None without git or a repository
    (the Nix build has neither)."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(HERE), *args], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def source_commit() -> dict:
    """The source tree's git commit (and whether the tree differed from it)."""
    if "AUTO_REVIEW_SOURCE_COMMIT" in os.environ:  # the Nix build has no .git
        return {"gitCommit": os.environ["AUTO_REVIEW_SOURCE_COMMIT"], "dirty": None}
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"gitCommit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"gitCommit": commit, "dirty": bool(status)}


def wheel_dependencies() -> list[dict]:
    """The pinned wheels the build used (launcher and gateway), with their sha256."""
    packages = [*pinned_wheels(None), *pinned_wheels("gateway")]
    return [
        {
            "uri": p.purl,
            "name": p.source.rsplit(" ", 1)[-1],
            "digest": {"sha256": p.checksums["SHA256"]},
        }
        for p in sorted(packages, key=lambda p: p.source)
    ]


def origin_url() -> str:
    """The source repository's remote (git+URL), else a local marker."""
    url = None if "AUTO_REVIEW_SOURCE_COMMIT" in os.environ else git("remote", "get-url", "origin")
    return f"git+{url}" if url else "git+local:auto-review"


def build_provenance(
    subjects: dict[str, Path], command: list[str], parameters: dict, manifest: dict
) -> bytes:
    """The in-toto Statement (SLSA provenance v1) for the release files `subjects`."""
    source = source_commit()
    resolved = []
    if source["gitCommit"]:
        resolved.append(
            {
                "uri": origin_url(),
                "digest": {"gitCommit": source["gitCommit"]},
                "annotations": {"dirty": source["dirty"]},
            }
        )
    resolved += wheel_dependencies()
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {"name": name, "digest": {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}}
            for name, path in sorted(subjects.items())
        ],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"command": command, **parameters},
                "internalParameters": {
                    "SOURCE_DATE_EPOCH": manifest["created"],
                    "bundle_digest": manifest["digest"],
                    "diff_id": manifest["diff_id"],
                },
                "resolvedDependencies": resolved,
            },
            "runDetails": {"builder": {"id": BUILDER_ID}, "metadata": {}},
        },
    }
    return json.dumps(statement, indent=1, sort_keys=True).encode() + b"\n"
