"""Where each rootfs file came from: Debian packages (dpkg), Nix store paths, the pinned
wheels, or this project. The SBOM (buildsys/sbom.py) is written from these records.

A .pyc is attributed to the package of the .py it was compiled from; a file nobody owns
is left for the SBOM to mark NOASSERTION: nothing here guesses.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tomllib
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from buildsys import wheels
from buildsys.recipe import HERE, pinned_requirements

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
