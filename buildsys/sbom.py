"""The SBOM: an SPDX 2.3 JSON document of what the single file carries.

Every regular file of the rootfs is listed with its SHA1 and SHA256 (SPDX 2.3 requires
SHA1) and tied by a CONTAINS relationship to the package it came from:
  - host builds: the Debian package `dpkg-query -S` names (a .pyc: the owner of its .py),
    with its version, source package and the license of debian/copyright's `Files: *`;
  - Nix builds: the store path (/nix/store/<hash>-<name>-<version>) a file lives under;
  - ours: the gateway (gateway.pyz, which embeds the pinned PyYAML wheel's modules), the
    static files and mount points from payload/;
  - the pinned wheels (zstandard for each ABI, PyYAML) with the wheel files' sha256.
A file no package owns (a generated file such as the CA bundle) goes under an
"unpackaged" package with NOASSERTION: the document never guesses.
The document is deterministic: its date is SOURCE_DATE_EPOCH, its ids are sorted paths.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from buildsys import wheels
from buildsys.recipe import HERE, Recipe, pinned_requirements

# Debian copyright short names (DEP-5) -> SPDX ids; anything else is NOASSERTION.
DEBIAN_LICENSES = {
    "apache-2.0": "Apache-2.0",
    "artistic": "Artistic-1.0-Perl",
    "bsd-2-clause": "BSD-2-Clause",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd-4-clause": "BSD-4-Clause",
    "cc0-1.0": "CC0-1.0",
    "curl": "curl",
    "expat": "MIT",
    "gpl-2": "GPL-2.0-only",
    "gpl-2+": "GPL-2.0-or-later",
    "gpl-3": "GPL-3.0-only",
    "gpl-3+": "GPL-3.0-or-later",
    "isc": "ISC",
    "lgpl-2": "LGPL-2.0-only",
    "lgpl-2+": "LGPL-2.0-or-later",
    "lgpl-2.1": "LGPL-2.1-only",
    "lgpl-2.1+": "LGPL-2.1-or-later",
    "lgpl-3": "LGPL-3.0-only",
    "lgpl-3+": "LGPL-3.0-or-later",
    "mit": "MIT",
    "mpl-2.0": "MPL-2.0",
    "oldap-2.8": "OLDAP-2.8",
    "openssl": "OpenSSL",
    "psf-2": "Python-2.0",
    "python": "Python-2.0",
    "zlib": "Zlib",
}
NOASSERTION = "NOASSERTION"
STORE_PATH = re.compile(r"^nix/store/([0-9a-z]{32})-([^/]+)")


@dataclass
class Package:
    """One SPDX package and the in-root paths of the files it provides."""

    spdxid: str
    name: str
    version: str
    license: str = NOASSERTION
    source: str = ""
    supplier: str = NOASSERTION
    purl: str = ""
    checksums: dict[str, str] = field(default_factory=dict)
    comment: str = ""
    files: list[str] = field(default_factory=list)


def spdx_id(*parts: str) -> str:
    """An SPDX id from free text (letters, digits, '.', '-' only)."""
    return "SPDXRef-" + "-".join(re.sub(r"[^A-Za-z0-9.]+", ".", p).strip(".") for p in parts)


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


def debian_license(package: str) -> tuple[str, str]:
    """(SPDX expression or NOASSERTION, the raw License of debian/copyright's `Files: *`)."""
    path = Path("/usr/share/doc") / package / "copyright"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return NOASSERTION, ""
    for para in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", para, flags=re.M))
        if fields.get("Files", "").split()[:1] == ["*"]:
            raw = fields.get("License", "").strip()
            words = re.split(r"\s+(or|and)\s+", raw.lower())
            ids = [DEBIAN_LICENSES.get(w) for w in words[::2]]
            if raw and all(ids):
                ops = [w.upper() for w in words[1::2]]
                expr = ids[0] or ""
                for op, ident in zip(ops, ids[1:], strict=True):
                    expr += f" {op} {ident}"
                return expr, raw
            return NOASSERTION, raw
    return NOASSERTION, ""


def dpkg_owners(paths: Iterable[str]) -> dict[str, str]:
    """In-root path -> owning Debian package (host builds); unowned paths are absent.

    A path is asked as it is and in its other merged-/usr spelling (Debian 12 still
    registers /lib/x86_64-linux-gnu/libc.so.6, which the build copies to /usr/lib);
    a .pyc is asked as the .py it was compiled from."""
    queries: dict[str, list[str]] = {}
    for path in paths:
        asked = "/" + (path[:-1] if path.endswith(".pyc") else path)
        other = asked[4:] if asked.startswith("/usr/") else "/usr" + asked
        queries[path] = [asked, other]
    wanted = sorted({q for qs in queries.values() for q in qs})
    proc = subprocess.run(
        ["dpkg-query", "-S", *wanted], capture_output=True, text=True, check=False
    )
    owner: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        pkgs, sep, path = line.rpartition(": ")
        if sep and not line.startswith("diversion "):
            # "libc6:amd64" -> "libc6"; a file in two packages: the first, sorted
            owner[path] = sorted(p.strip().split(":")[0] for p in pkgs.split(","))[0]
    return {
        path: next(owner[q] for q in qs if q in owner)
        for path, qs in queries.items()
        if any(q in owner for q in qs)
    }


def debian_packages(names: Iterable[str]) -> dict[str, Package]:
    """Package records for Debian binary packages: version, source, license, purl."""
    names = sorted(set(names))
    if not names:
        return {}
    fmt = "${Package}\t${Version}\t${source:Package}\t${source:Version}\t${Architecture}\n"
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", fmt, *names], capture_output=True, text=True, check=True
    )
    distro = os_release()
    out = {}
    for line in proc.stdout.splitlines():
        name, version, src, src_version, arch = line.split("\t")
        spdx_license, raw = debian_license(name)
        qual = f"?arch={arch}" + (f"&distro={distro}" if distro else "")
        out[name] = Package(
            spdxid=spdx_id("Package", "deb", name),
            name=name,
            version=version,
            license=spdx_license,
            source=f"Debian source package {src} {src_version}",
            supplier="Organization: Debian",
            purl=f"pkg:deb/debian/{name}@{quote(version, safe='')}{qual}",
            comment=f"debian/copyright License of Files: *: {raw}" if raw else "",
        )
    return out


def os_release() -> str:
    """e.g. "debian-12" from /etc/os-release, or ""."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return ""
    fields = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', text, flags=re.M))
    return (
        f"{fields['ID']}-{fields['VERSION_ID']}"
        if "ID" in fields and "VERSION_ID" in fields
        else ""
    )


def nix_package(path: str) -> Package | None:
    """The store path a file lives under, as a package (name and version from its name)."""
    match = STORE_PATH.match(path)
    if not match:
        return None
    digest, rest = match.groups()
    name, version = rest, ""
    found = re.match(r"^(.*?)-(\d[^-]*(?:-[^-]+)*)$", rest)
    if found:
        name, version = found.groups()
    return Package(
        spdxid=spdx_id("Package", "nix", rest),
        name=name,
        version=version or NOASSERTION,
        source=f"/nix/store/{digest}-{rest}",
    )


def wheel_package(path: Path, name: str, version: str) -> Package:
    """A pinned wheel: the wheel file's sha256 and the license its metadata declares."""
    license_ = NOASSERTION
    with zipfile.ZipFile(path) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        headers = whl.read(meta).decode(errors="replace").split("\n\n", 1)[0]
    fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", headers, flags=re.M))
    if "License-Expression" in fields:
        license_ = fields["License-Expression"].strip()
    elif fields.get("License", "").strip().lower() in DEBIAN_LICENSES:
        license_ = DEBIAN_LICENSES[fields["License"].strip().lower()]
    return Package(
        spdxid=spdx_id("Package", "pypi", path.name),
        name=name,
        version=version,
        license=license_,
        source=f"pinned in pyproject.toml, wheel {path.name}",
        purl=f"pkg:pypi/{name.lower()}@{version}",
        checksums={"SHA256": hashlib.sha256(path.read_bytes()).hexdigest()},
    )


def pinned_wheels(extra: str | None) -> list[Package]:
    """Packages for the wheels of pyproject's pins (or of an extra) in the wheel cache."""
    out = []
    for name, version in sorted(pinned_requirements(extra).items()):
        stem = name.lower().replace("-", "_")
        hits = sorted(wheels.WHEEL_CACHE.glob(f"{stem}-{version}-*.whl"))
        hits = [h for h in hits if os.uname().machine in h.name or "-none-any" in h.name]
        out += [wheel_package(hit, name, version) for hit in hits]
    return out


def own_package(name: str, version: str, comment: str) -> Package:
    """A package of this project (the launcher, the gateway, payload/ files)."""
    with open(HERE / "pyproject.toml", "rb") as fh:
        license_ = tomllib.load(fh)["project"]["license"]["text"]
    return Package(
        spdxid=spdx_id("Package", name),
        name=name,
        version=version,
        license=license_,
        source="this repository",
        supplier="Organization: auto-review",
        comment=comment,
    )


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
    """SPDX file names are relative: ./rootfs/usr/bin/git, ./zipapp/launcher/cli.py."""
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
