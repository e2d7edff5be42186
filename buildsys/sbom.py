"""The SBOM: an SPDX 2.3 JSON document of what the single file carries.

Every regular file of the rootfs is listed with its SHA1 and SHA256 (SPDX 2.3 requires
SHA1) and tied by a CONTAINS relationship to the package it came from (buildsys/origins:
the Debian package dpkg names, the Nix store path, a pinned wheel, or ours). Every
zipapp member but the SBOM itself is listed too. A file no package owns (a generated
file such as the CA bundle) goes under an "unpackaged" package with NOASSERTION.
The document is deterministic: its date is SOURCE_DATE_EPOCH, its ids are sorted paths.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile

from buildsys.origins import (
    NOASSERTION,
    Package,
    debian_packages,
    dpkg_owners,
    nix_package,
    own_package,
    pinned_wheels,
    spdx_id,
)
from buildsys.recipe import Recipe


def tar_files(tar: bytes) -> list[tuple[str, str, str]]:
    """(in-root path, sha1, sha256) of every regular file and hardlink of the tar."""
    out: list[tuple[str, str, str]] = []
    digests: dict[str, tuple[str, str]] = {}
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        for member in tf:
            if member.isreg():
                fh = tf.extractfile(member)
                assert fh is not None
                data = fh.read()
                digests[member.name] = (
                    hashlib.sha1(data).hexdigest(),
                    hashlib.sha256(data).hexdigest(),
                )
            elif not member.islnk():
                continue
            out.append((member.name, *digests[member.linkname if member.islnk() else member.name]))
    return out


def build_sbom(
    recipe: Recipe,
    manifest: dict,
    tar: bytes,
    zip_files: list[tuple[str, bytes]],
) -> bytes:
    """The SPDX 2.3 JSON document for a bundle (its tar) and the zipapp members beside it."""
    version = manifest["version"]
    root = own_package("auto-review", version, "the single file: launcher, bundle, vendored code")
    gateway = own_package("auto-review-gateway", version, "gateway.pyz, run inside the sandbox")
    unpackaged = Package(
        spdxid=spdx_id("Package", "unpackaged"),
        name="unpackaged-host-files",
        version=NOASSERTION,
        comment="files no package owns (generated on the build host, e.g. the CA bundle)",
    )
    files = tar_files(tar)
    ours = {
        *(f"etc/{n}" for n in recipe.section("static").get("etc", [])),
        *(p.lstrip("/") for p in recipe.section("mountpoints")),
    }
    gateway_path = recipe.section("gateway")["install"].lstrip("/")
    packages: dict[str, Package] = {}
    rest = []
    for path, _sha1, _sha256 in files:
        nix = nix_package(path)
        if path == gateway_path:
            gateway.files.append(path)
        elif path in ours:
            root.files.append(path)
        elif nix is not None:
            packages.setdefault(nix.spdxid, nix).files.append(path)
        else:
            rest.append(path)
    if rest and shutil.which("dpkg-query"):
        owners = dpkg_owners(rest)
        debs = debian_packages(owners.values())
        for path in rest:
            pkg = debs.get(owners.get(path, ""))
            (pkg or unpackaged).files.append(path)
        for pkg in debs.values():
            packages[pkg.spdxid] = pkg
    else:
        unpackaged.files += rest
    gateway_wheels = pinned_wheels("gateway")
    launcher_wheels = pinned_wheels(None)
    for pkg in [*gateway_wheels, *launcher_wheels]:
        packages[pkg.spdxid] = pkg
    root.files += [f"zipapp:{name}" for name, _data in zip_files]
    all_packages = [root, gateway, *packages.values()]
    if unpackaged.files:
        all_packages.append(unpackaged)
    all_packages.sort(key=lambda p: p.spdxid)

    digests = {path: (sha1, sha256) for path, sha1, sha256 in files}
    for name, data in zip_files:
        digests[f"zipapp:{name}"] = (
            hashlib.sha1(data).hexdigest(),
            hashlib.sha256(data).hexdigest(),
        )
    file_ids = {path: spdx_id("File", str(i)) for i, path in enumerate(sorted(digests))}
    relationships = [("SPDXRef-DOCUMENT", "DESCRIBES", root.spdxid)]
    for pkg in all_packages:
        if pkg is not root:
            relationships.append((root.spdxid, "CONTAINS", pkg.spdxid))
        relationships += [(pkg.spdxid, "CONTAINS", file_ids[p]) for p in sorted(pkg.files)]
    relationships += [(gateway.spdxid, "CONTAINS", p.spdxid) for p in gateway_wheels]

    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{manifest['name']}-{version}",
        "documentNamespace": (
            f"https://spdx.org/spdxdocs/{manifest['name']}-{version}-"
            + manifest["diff_id"].split(":", 1)[1]
        ),
        "creationInfo": {
            "created": manifest["created"],
            "creators": [f"Tool: auto-review-build.py-{version}"],
        },
        "documentDescribes": [root.spdxid],
        "packages": [package_json(p, digests) for p in all_packages],
        "files": [
            {
                "SPDXID": file_ids[path],
                "fileName": display_name(path),
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": digests[path][0]},
                    {"algorithm": "SHA256", "checksumValue": digests[path][1]},
                ],
                "licenseConcluded": NOASSERTION,
                "copyrightText": NOASSERTION,
            }
            for path in sorted(digests)
        ],
        "relationships": [
            {"spdxElementId": a, "relationshipType": t, "relatedSpdxElement": b}
            for a, t, b in relationships
        ],
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


def display_name(path: str) -> str:
    """SPDX file names are relative: ./rootfs/usr/bin/git, ./zipapp/launcher/cli/main.py."""
    if path.startswith("zipapp:"):
        return "./zipapp/" + path.removeprefix("zipapp:")
    return "./rootfs/" + path


def package_json(pkg: Package, digests: dict[str, tuple[str, str]]) -> dict:
    """One SPDX package object; one that contains files carries their verification code
    (SPDX 2.3 section 7.9: sha1 over the sorted sha1s of its files)."""
    out: dict = {
        "SPDXID": pkg.spdxid,
        "name": pkg.name,
        "versionInfo": pkg.version,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": False,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": pkg.license,
        "copyrightText": NOASSERTION,
        "supplier": pkg.supplier,
    }
    if pkg.files:
        sha1s = "".join(sorted(digests[p][0] for p in pkg.files))
        out["filesAnalyzed"] = True
        out["packageVerificationCode"] = {
            "packageVerificationCodeValue": hashlib.sha1(sha1s.encode()).hexdigest()
        }
    if pkg.source:
        out["sourceInfo"] = pkg.source
    if pkg.comment:
        out["comment"] = pkg.comment
    if pkg.purl:
        out["externalRefs"] = [
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": pkg.purl,
            }
        ]
    if pkg.checksums:
        out["checksums"] = [
            {"algorithm": alg, "checksumValue": value}
            for alg, value in sorted(pkg.checksums.items())
        ]
    return out
