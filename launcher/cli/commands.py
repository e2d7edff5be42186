"""Launcher-side commands: `bundle`, `cache`, `doctor`, `--version`."""

from __future__ import annotations

import argparse
import json
import sys

from launcher import embedded, settings
from launcher.errors import ExitCode, PayloadCorrupt, UsageError

SBOM_MEMBER = "bundle/sbom.spdx.json"
MAX_SBOM = 16 << 20  # the build's is 0.36 MB


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (our exit code and one-line format) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, f"see: {self.prog} --help")


def print_version() -> int:
    """The launcher and its bundle ship together: one version, plus the bundle digest."""
    m = embedded.manifest()
    print(f"auto-review {m['version']} (bundle {m['digest'][:19]}, {m['arch']})")
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="auto-review", add_help=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    bundle = sub.add_parser("bundle", help="the embedded bundle")
    bsub = bundle.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    info = bsub.add_parser("info", help="print the embedded manifest")
    info.add_argument("--json", action="store_true", help="the manifest as JSON")
    bsub.add_parser("sbom", help="print the embedded SBOM (SPDX 2.3 JSON)")
    export = bsub.add_parser("export", help="write the embedded rootfs as a container image")
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--oci", metavar="DIR", help="an OCI image layout (new or empty dir)")
    target.add_argument("--docker-archive", metavar="FILE", help="a docker-archive tar")
    target.add_argument(
        "--seccomp", metavar="FILE", help="the seccomp profile, for --security-opt seccomp=FILE"
    )
    export.add_argument(
        "--zstd", action="store_true", help="--oci only: the embedded zstd blob as the layer"
    )

    cache = sub.add_parser("cache", help="the unpacked-rootfs cache")
    csub = cache.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    csub.add_parser("prepare", help="unpack the embedded bundle now (e.g. at install time)")
    csub.add_parser("path", help="print the cache root")
    lst = csub.add_parser("list", help="versions in the cache")
    lst.add_argument("--json", action="store_true", help="the versions as JSON")
    gc = csub.add_parser("gc", help="remove stale versions (pinned ones are kept)")
    gc.add_argument(
        "--keep", type=int, default=1, metavar="N", help="older versions kept (default: 1)"
    )
    gc.add_argument(
        "--older-than",
        type=float,
        default=7.0,
        metavar="DAYS",
        help="remove only versions unused for DAYS (default: 7)",
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    clear = csub.add_parser(
        "clear", help="remove every version not in use, pinned ones and their pins too"
    )
    clear.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    verify = csub.add_parser("verify", help="re-hash an unpacked version")
    verify.add_argument("version", nargs="?", help="label or digest (default: embedded)")
    pin = csub.add_parser("pin", help="keep a version from GC (again: nothing changes)")
    pin.add_argument("version", help="label or digest, as `cache list` shows them")
    unpin = csub.add_parser("unpin", help="let GC remove a version again")
    unpin.add_argument("version", help="label or digest, as `cache list` shows them")

    doctor = sub.add_parser("doctor", help="check this host")
    doctor.add_argument("--json", action="store_true", help='{"ok": ..., "items": [...]}')
    return parser


def run_launcher_command(argv: list[str], opts: dict[str, bool]) -> int:
    """Run `bundle ...`, `cache ...` or `doctor`."""
    args = build_parser().parse_args(argv)
    if args.command != "doctor":  # doctor reports a bad setting as one of its findings
        settings.check()
    if args.command == "bundle":
        if args.verb == "export":
            if args.seccomp is not None:
                return seccomp_export(args.seccomp, args.zstd)
            return bundle_export(args.oci, args.docker_archive, args.zstd)
        if args.verb == "sbom":
            return bundle_sbom()
        return bundle_info(args.json)
    if args.command == "doctor":
        from launcher.doctor import checks

        return checks.run(as_json=args.json)
    from launcher.cli import cachecmd

    return cachecmd.run(args, quiet=opts["quiet"])


def bundle_info(as_json: bool) -> int:
    """Print the embedded manifest."""
    m = embedded.manifest()
    if as_json:
        json.dump(m, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return ExitCode.OK
    rows = [
        ("name", m["name"]),
        ("version", m["version"]),
        ("digest", m["digest"]),
        ("diff_id", m["diff_id"]),
        ("arch", m["arch"]),
        ("created", m["created"]),
        ("compressed", f"{m['compressed_size'] / 1e6:.1f} MB"),
        ("unpacked", f"{m['unpacked_size'] / 1e6:.1f} MB in {m['file_count']} entries"),
        ("entrypoint", " ".join(m["process"]["args"])),
        ("user", f"{m['process']['user']['name']} ({m['process']['user']['uid']})"),
    ]
    for key, value in rows:
        print(f"{key:<11} {value}")
    return ExitCode.OK


def bundle_sbom() -> int:
    """Print the SBOM the build embedded (the same bytes as the release's .spdx.json)."""
    try:
        data = embedded.read_member(SBOM_MEMBER, MAX_SBOM)
    except (KeyError, OSError) as exc:
        raise PayloadCorrupt(f"cannot read the embedded SBOM: {exc}", embedded.REBUILD) from None
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return ExitCode.OK


def seccomp_export(target: str, zstd: bool) -> int:
    """Write the sandbox's seccomp profile (podman/Docker format); print the path."""
    from launcher.image.export import export_seccomp

    if zstd:
        raise UsageError("--zstd applies to --oci only", "drop --zstd")
    print(export_seccomp(target))
    return ExitCode.OK


def bundle_export(oci: str | None, docker_archive: str | None, zstd: bool) -> int:
    """Write the embedded rootfs as an OCI layout or a docker-archive; print the digest."""
    from launcher.image.export import export_docker_archive, export_oci

    if docker_archive is not None:
        if zstd:
            raise UsageError(
                "--zstd applies to --oci only", "docker-archive layers are uncompressed"
            )
        export_docker_archive(docker_archive)
        print(docker_archive)
        return ExitCode.OK
    assert oci is not None
    ref = export_oci(oci, zstd=zstd)
    print(f"{oci} {ref['digest']}")
    return ExitCode.OK
