"""A payload that promises more than the caps is refused before its tar is read, and no
payload takes the launcher over 64 MB: a million empty files, announced by the manifest,
by the build's file list, or hidden behind the real build's manifest; and a file list
the manifest vouches for that is too large to hold.

Before the caps moved into the manifest's contract, such a payload was refused only at
member 200,001, after the launcher had peaked at 143 MB.
"""

from __future__ import annotations

import ast
import hashlib
import os
import zipfile
from pathlib import Path

import pytest
import zstandard
from conftest import (
    app_vouching_for,
    needs_root,
    rewrite_app,
    run_app_measured,
    without_host_libzstd,
)

MEMBERS = 1_000_000
MAX_RSS_MB = 64


def file_count(app: Path) -> int:
    """The file count the single file's embedded manifest promises."""
    with zipfile.ZipFile(app) as z:
        text = z.read("launcher/_embedded.py").decode()
    literal = text.split("MANIFEST = ", 1)[1].split("\nCODE_ID = ", 1)[0]
    return int(ast.literal_eval(literal)["file_count"])


def empty_file_headers(count: int) -> bytes:
    """A zstd stream of a tar of `count` empty regular files (ustar), then its end."""
    template = bytearray(512)
    template[100:108] = b"0000644\x00"
    template[108:116] = b"0000000\x00"
    template[116:124] = b"0000000\x00"
    template[124:136] = b"00000000000\x00"
    template[136:148] = b"00000000000\x00"
    template[156:157] = b"0"
    template[257:265] = b"ustar\x0000"
    out = zstandard.ZstdCompressor(level=1).compressobj()
    chunks, batch = [], []
    for i in range(count):
        header = bytearray(template)
        header[0:9] = b"f%08d" % i
        header[148:156] = b"        "
        header[148:156] = b"%06o\x00 " % sum(header)
        batch.append(bytes(header))
        if len(batch) == 4096:
            chunks.append(out.compress(b"".join(batch)))
            batch = []
    chunks.append(out.compress(b"".join(batch) + bytes(1024)))
    chunks.append(out.flush())
    return b"".join(chunks)


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return empty_file_headers(MEMBERS)


def cold(app: Path, tmp_path: Path) -> tuple[int, str, float]:
    cache = tmp_path / "cache"
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache))
    result = run_app_measured(app, "-q", "cache", "prepare", env=env)
    bundles = cache / "v1" / "bundles"
    published = [p for p in bundles.iterdir() if p.name.startswith("sha256-") and p.is_dir()]
    assert published == [] or result[0] == 0
    return result


def with_payload(app: Path, out: Path, payload: bytes, **fields: object) -> Path:
    def edit(manifest: dict) -> None:
        manifest.update(
            digest="sha256:" + hashlib.sha256(payload).hexdigest(), compressed_size=len(payload)
        )
        manifest.update({k: v for k, v in fields.items() if v is not None})
        for key in [k for k, v in fields.items() if v is None]:
            manifest.pop(key, None)

    return rewrite_app(app, out, payload=payload, edit_manifest=edit)


def test_a_manifest_promising_a_million_files_is_refused_at_once(
    app: Path, million: bytes, tmp_path: Path
) -> None:
    bad = with_payload(app, tmp_path / "auto-review", million, file_count=MEMBERS)
    code, stderr, rss = cold(bad, tmp_path)
    assert code == 65, stderr
    assert stderr.count("\n") == 1
    assert "manifest file_count 1000000 is over the cap of 20000" in stderr
    assert rss <= MAX_RSS_MB


def test_a_file_list_promising_more_than_the_manifest_is_refused_before_the_payload(
    app: Path, million: bytes, tmp_path: Path
) -> None:
    with zipfile.ZipFile(app) as zf:
        listed = zf.read("bundle/files.tsv")
    longer = listed + b"file\t644\t0\t" + b"0" * 64 + b"\tf00000000\n"
    digest = "sha256:" + hashlib.sha256(longer).hexdigest()

    def edit(manifest: dict) -> None:
        manifest.update(
            digest="sha256:" + hashlib.sha256(million).hexdigest(),
            compressed_size=len(million),
            files_digest=digest,
        )

    bad = rewrite_app(
        app,
        tmp_path / "auto-review",
        payload=million,
        edit_manifest=edit,
        members={"bundle/files.tsv": longer},
    )
    code, stderr, rss = cold(bad, tmp_path)
    assert code == 65, stderr
    count = file_count(app)
    assert f"lists {count + 1} files, the manifest {count}" in stderr
    assert rss <= MAX_RSS_MB


def test_a_million_files_behind_the_real_manifest_stop_at_its_count(
    app: Path, million: bytes, tmp_path: Path
) -> None:
    """The build's manifest and file list, untouched but for the payload's digest: the
    extractor stops at the member after the promised count, memory bounded by it."""
    bad = with_payload(app, tmp_path / "auto-review", million)
    code, stderr, rss = cold(bad, tmp_path)
    assert code == 65, stderr
    assert f"more than {file_count(app)} members" in stderr
    assert rss <= MAX_RSS_MB


def test_a_payload_at_the_member_cap_stays_under_64_mb(app: Path, tmp_path: Path) -> None:
    """The most members any manifest may promise, all unpacked: the cap bounds memory."""
    from launcher.manifest import MAX_FILE_COUNT

    payload = empty_file_headers(MAX_FILE_COUNT)
    ok = with_payload(
        app, tmp_path / "auto-review", payload, file_count=MAX_FILE_COUNT, files_digest=None
    )
    code, stderr, rss = run_app_measured(
        ok,
        "-q",
        "cache",
        "prepare",
        env=dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(tmp_path / "cache")),
    )
    assert code == 0, stderr
    assert rss <= MAX_RSS_MB


@pytest.mark.parametrize("lines", [20_000, 1_100])
def test_a_forged_file_list_too_large_is_refused_before_it_is_read(
    app: Path, tmp_path: Path, lines: int
) -> None:
    """A file list the manifest vouches for (its files_digest made to match), of lines
    as long as a path may be: 20,000 of them (83 MB) took the launcher to 190 MB before
    the line count was refused; now its size is refused before it is read, under 64 MB.
    1,100 lines (4.6 MB, under the cap) are read and refused for their count."""
    line = b"file\t644\t1\t" + b"0" * 64 + b"\t" + b"a/" * 2040 + b"x\n"
    forged = line * lines
    bad = app_vouching_for(app, tmp_path / "big.pyz", forged)
    cache = tmp_path / "cache"
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache))
    code, err, rss = run_app_measured(bad, "cache", "prepare", env=env)
    assert code == 65, err
    assert len(err.strip().splitlines()) == 1, err
    if lines == 20_000:
        assert f"bundle/files.tsv of {len(forged)} bytes is over the cap" in err
    else:
        assert f"bundle/files.tsv lists {lines} files, the manifest" in err
    assert rss < MAX_RSS_MB, f"peak RSS {rss:.1f} MB"
    assert not any(p.is_dir() for p in (cache / "v1" / "bundles").glob("sha256-*"))


def lie_about_size(app: Path, name: str, size: int) -> None:
    """Make the zip directory of `app` say that member `name` inflates to `size` bytes
    (APPNOTE 4.3.12: the central header's uncompressed size, at offset 24)."""
    data = bytearray(app.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_len = int.from_bytes(data[at + 28 : at + 30], "little")
        if data[at + 46 : at + 46 + name_len] == name.encode():
            data[at + 24 : at + 28] = size.to_bytes(4, "little")
            app.write_bytes(bytes(data))
            return
        at = data.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{name} is not in the zip directory of {app}")


@needs_root  # the cold start as on a host without libzstd: a mount namespace
@pytest.mark.parametrize("command", [("bundle", "sbom"), ("cache", "prepare")])
def test_a_member_that_inflates_past_what_the_directory_says_is_refused(
    app: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """zipfile's read() inflates up to 2 GiB in one call whatever the zip directory
    says: an SBOM, or a vendored decoder's index (read on a cold start of a host
    without libzstd, forced here by a missing index), of 200 MB of zeros in 200 KB
    that the directory calls 1,000 bytes took the launcher past 200 MB. Each is now read
    no further than its cap (here, its declared size) and refused in one line."""
    member = "bundle/sbom.spdx.json" if command[0] == "bundle" else "_vendor/zstandard.json"
    bad = rewrite_app(app, tmp_path / "bomb.pyz", members={member: bytes(200 << 20)})
    lie_about_size(bad, member, 1000)
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(tmp_path / "cache"))
    prefix = without_host_libzstd() if command[0] == "cache" else None
    code, err, rss = run_app_measured(bad, *command, env=env, prefix=prefix)
    assert code == 65, err
    [line] = err.strip().splitlines()  # read to the size the directory says: its CRC fails
    assert line.startswith(f"auto-review: cannot read {member}: Bad CRC-32"), line
    assert rss < MAX_RSS_MB, f"peak RSS {rss:.1f} MB"


@pytest.mark.parametrize("how", ["twice", "lzma"])
def test_a_member_named_twice_or_compressed_otherwise_is_refused_unread(
    app: Path, tmp_path: Path, how: str
) -> None:
    """The SBOM named twice (a size check would look at the first, zipfile reads the
    last) or compressed with LZMA (whose output zipfile does not bound): one line, exit
    65, before anything of it is inflated."""
    import warnings

    bad = tmp_path / "bad.pyz"
    sbom = "bundle/sbom.spdx.json"
    with zipfile.ZipFile(app) as src, open(bad, "wb") as fh:
        fh.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(fh, "w") as dst, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile's "Duplicate name"
            for info in src.infolist():
                data = src.read(info.filename)
                if info.filename == sbom and how == "lzma":
                    info = zipfile.ZipInfo(sbom, info.date_time)
                    info.compress_type = zipfile.ZIP_LZMA
                dst.writestr(info, data)
                if info.filename == sbom and how == "twice":
                    dst.writestr(info, bytes(1 << 20))
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(tmp_path / "cache"))
    code, err, rss = run_app_measured(bad, "bundle", "sbom", env=env)
    assert code == 65, err
    [line] = err.strip().splitlines()
    want = {"twice": f"has 2 members named {sbom}", "lzma": "compressed in a way"}[how]
    assert want in line, line
    assert rss < MAX_RSS_MB, f"peak RSS {rss:.1f} MB"
