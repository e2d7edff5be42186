"""Tests of launcher.cache.tarstream and launcher.cache.readahead: hostile tars written
block by block (tarfile's writer refuses most of them), differential checks against
tarfile on archives it writes, and the memory bombs measured in a child process."""

from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard
from conftest import HOST_PYTHON, rewrite_app

from launcher.cache.extract import Limits, extract_tar_stream
from launcher.cache.readahead import ReadAhead
from launcher.cache.tarstream import Caps, TarReader, TarStreamError
from launcher.errors import PayloadCorrupt

ROOT = Path(__file__).resolve().parent.parent
BIG = Limits(max_members=100_000, max_file_size=1 << 30, max_total_size=1 << 32)
END = bytes(1024)
MIB = 1 << 20


def header(
    name: bytes,
    kind: bytes = b"0",
    size: int = 0,
    *,
    mode: int = 0o644,
    link: bytes = b"",
    magic: bytes = b"ustar\x0000",
    prefix: bytes = b"",
    raw_size: bytes | None = None,
    checksum: int | None = None,
) -> bytes:
    """One 512-byte header block, checksum computed unless given."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"%07o\x00" % mode
    block[108:116] = block[116:124] = b"0000000\x00"
    block[124:136] = raw_size if raw_size is not None else b"%011o\x00" % size
    assert len(block) == 512, "a field overflowed"
    block[136:148] = b"%011o\x00" % 1700000000
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[157 : 157 + len(link)] = link
    block[257:265] = magic
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = b"%06o\x00 " % (sum(block) if checksum is None else checksum)
    return bytes(block)


def b256(n: int) -> bytes:
    """A size field in GNU base-256 (for sizes octal digits cannot hold)."""
    return b"\x80" + n.to_bytes(11, "big")


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def member(name: bytes, data: bytes = b"", kind: bytes = b"0", **kw: object) -> bytes:
    return header(name, kind, len(data), **kw) + pad(data)  # type: ignore[arg-type]


def pax_record(key: str, value: bytes) -> bytes:
    body = f" {key}=".encode() + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def pax(records: dict[str, bytes], kind: bytes = b"x") -> bytes:
    data = b"".join(pax_record(k, v) for k, v in records.items())
    return member(b"././@PaxHeader", data, kind)


def gnu_long(kind: bytes, text: bytes) -> bytes:
    return member(b"././@LongLink", text + b"\x00", kind, magic=b"ustar  \x00")


def read_all(data: bytes, caps: Caps | None = None, read_size: int = 1 << 20) -> list:
    """(name, type, mode, size, linkname, data) of every member."""
    reader = TarReader(io.BytesIO(data), caps, read_size)
    out = []
    for m in reader:
        content = b"".join(bytes(v) for v in reader.data())
        out.append((m.name, m.type, m.mode, m.size, m.linkname, content))
    assert reader.ended
    return out


def refused(data: bytes, caps: Caps | None = None) -> TarStreamError:
    with pytest.raises(TarStreamError) as caught:
        read_all(data, caps)
    return caught.value


class Reads:
    """A stream that hands out at most `step` bytes per read(), with no readinto."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + min(n, self.step)]
        self.pos += len(chunk)
        return chunk


# --- the format ----------------------------------------------------------------------


def _tarfile_archive(fmt: int, seed: int) -> bytes:
    """An archive tarfile writes: long names and links, prefixes, every kind we extract."""
    rng = random.Random(seed)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for i in range(60):
            depth = rng.randint(0, 12)
            name = "/".join(
                f"dir{rng.randint(0, 3)}-" + "x" * rng.randint(1, 30) for _ in range(depth)
            )
            name = (name + "/" if name else "") + f"m{i}-" + "n" * rng.randint(0, 120)
            info = tarfile.TarInfo(name)
            info.mode = rng.choice([0o644, 0o755, 0o4755, 0o600])
            kind = rng.choice(["file", "file", "dir", "symlink", "hardlink"])
            data = b""
            if kind == "file":
                data = rng.randbytes(rng.choice([0, 1, 511, 512, 513, 5000, 70_000]))
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = "t/" * rng.randint(0, 80) + "target"
            try:
                tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
            except ValueError:  # a name ustar cannot hold: nothing was written
                assert fmt == tarfile.USTAR_FORMAT
    return out.getvalue()


def _tarfile_view(data: bytes) -> list:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            content = tar.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
            out.append((m.name, m.type, m.mode, m.size if m.isreg() else 0, m.linkname, content))
    return out


@pytest.mark.parametrize(
    "fmt",
    [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT],
    ids=["pax", "gnu", "ustar"],
)
@pytest.mark.parametrize("read_size", [1 << 20, 700, 512, 7])
def test_reads_what_tarfile_writes(fmt: int, read_size: int) -> None:
    """Names (pax path, GNU long names, ustar prefixes), link targets, modes, data."""
    for seed in range(3):
        data = _tarfile_archive(fmt, seed)
        expected = _tarfile_view(data)
        assert len(expected) > 10
        ours = [
            (n, t, mo, s if t in (b"0", b"\x00") else 0, ln, c)
            for n, t, mo, s, ln, c in read_all(data, read_size=read_size)
        ]
        assert ours == expected


@pytest.mark.parametrize("kind", ["readinto", "read", "callable"])
def test_sources_and_odd_chunk_sizes(kind: str) -> None:
    body = os.urandom(3000)
    data = member(b"a", body) + member(b"b", b"xy") + END
    source: object
    if kind == "readinto":
        source = io.BytesIO(data)
    elif kind == "read":
        source = Reads(data, 13)
    else:
        chunks = iter([data[i : i + 100] for i in range(0, len(data), 100)] + [b""])
        source = lambda: next(chunks)  # noqa: E731
    reader = TarReader(source, read_size=333)
    got = [(m.name, b"".join(bytes(v) for v in reader.data())) for m in reader]
    assert got == [("a", body), ("b", b"xy")]


def test_unread_data_is_skipped() -> None:
    data = member(b"a", b"1" * 2000) + member(b"b", b"2") + END
    assert [m.name for m in TarReader(io.BytesIO(data))] == ["a", "b"]


def test_ustar_prefix_and_gnu_times_are_told_apart() -> None:
    posix = member(b"name", b"x", prefix=b"some/prefix")
    gnu = member(b"other", b"y", magic=b"ustar  \x00")
    names = [m[0] for m in read_all(posix + gnu + END)]
    assert names == ["some/prefix/name", "other"]


def test_a_gnu_header_with_bytes_in_the_prefix_field_is_refused() -> None:
    """GNU keeps atime/ctime where ustar has its prefix, and tarfile reads them as a
    prefix (``14527435420/other``): two readers, two names. Go's invalid-golang17.tar is
    such a header (tests/test_tar_corpus.py)."""
    gnu = member(b"other", b"y", magic=b"ustar  \x00", prefix=b"14527435420\x00")
    assert "tar readers disagree on its name" in str(refused(gnu + END))


def test_base256_size_and_signed_checksum() -> None:
    data = b"z" * 700
    big = header(b"f", raw_size=b256(700))
    assert read_all(big + pad(data) + END)[0][5] == data
    block = bytearray(header(b"\xe9t\xe9"))  # bytes >= 0x80: signed and unsigned sums differ
    block[148:156] = b" " * 8
    signed = 256 + sum(b - 256 if b > 127 else b for b in block[:148] + block[156:])
    block[148:156] = b"%06o\x00 " % signed
    assert read_all(bytes(block) + END)[0][0] == "\udce9t\udce9"  # surrogateescape


def test_v7_directory_and_trailing_slashes() -> None:
    data = member(b"olddir/", kind=b"\x00") + member(b"newdir//", kind=b"5") + END
    assert [(m[0], m[1]) for m in read_all(data)] == [("olddir", b"5"), ("newdir", b"5")]


def test_links_dirs_and_devices_carry_no_data() -> None:
    # POSIX: no data blocks for types 1-6, whatever the size field says (tarfile agrees).
    data = header(b"d", b"5", 1024) + header(b"l", b"2", 512, link=b"t") + member(b"f", b"ok") + END
    assert [(m[0], m[5]) for m in read_all(data)] == [("d", b""), ("l", b""), ("f", b"ok")]


def test_unknown_types_are_skipped_by_size() -> None:
    data = member(b"v", b"q" * 600, kind=b"V") + member(b"f", b"ok") + END
    assert [(m[0], m[1]) for m in read_all(data)] == [("v", b"V"), ("f", b"0")]


def test_pax_path_linkpath_size_and_ignored_keys() -> None:
    long = b"p/" * 200 + b"leaf"
    records = {"mtime": b"1.5", "path": long, "atime": b"x", "linkpath": b"\xff\x00raw"}
    data = (
        pax(records)
        + header(b"short", b"2")
        + pax({"size": b"3"})
        + header(b"f", size=99)
        + pad(b"abc")
        + END
    )
    got = read_all(data)
    assert got[0][0] == long.decode() and got[0][4] == "\udcff\x00raw"
    assert got[1][0] == "f" and got[1][3] == 3 and got[1][5] == b"abc"


def test_pax_and_gnu_long_link_together() -> None:
    data = gnu_long(b"K", b"t" * 300) + pax({"path": b"n" * 300}) + header(b"x", b"2") + END
    [(name, _t, _m, _s, link, _d)] = read_all(data)
    assert (name, link) == ("n" * 300, "t" * 300)


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no end-of-archive marker"),
        (member(b"a", b"x"), "no end-of-archive marker"),
        (member(b"a", b"x") + bytes(512), "inside the end-of-archive marker"),
        (member(b"a", b"x") + bytes(512) + member(b"b") + END, "a lone zero block"),
        (member(b"a", b"x" * 3000)[:2000], "inside the member data of 'a'"),
        (member(b"a", b"x") + header(b"b")[:300], "inside the header after the member 'a'"),
        (header(b"a", checksum=1) + END, "bad header checksum"),
        (header(b"a", raw_size=b"12x45678901\x00") + END, "invalid size field"),
        (header(b"a", raw_size=b"\xff" * 12) + END, "negative size"),
        (pax({"path": b"a"}) + END, "extension header without a member"),
        (
            gnu_long(b"L", b"a") + gnu_long(b"L", b"b") + member(b"c") + END,
            "two extension headers set the name",
        ),
        (
            gnu_long(b"L", b"a") + pax({"path": b"b"}) + member(b"c") + END,
            "two extension headers set the name",
        ),
        (pax({"size": b"1"}) + pax({"size": b"1"}) + member(b"c", b"x") + END, "set the size"),
        (pax({"size": b"-1"}) + member(b"c") + END, "invalid pax size"),
        (pax({"GNU.sparse.map": b"0,1"}) + member(b"c") + END, "sparse files are not supported"),
        (pax({"path": b"a"}, kind=b"g") + member(b"c") + END, "global pax header sets 'path'"),
        (member(b"././@PaxHeader", b"5 a=b\n", b"x") + member(b"c") + END, "malformed pax record"),
        (
            member(b"././@PaxHeader", b"8 pathx\n", b"x") + member(b"c") + END,
            "malformed pax record",
        ),
        (
            member(b"././@PaxHeader", b"99 path=a\n", b"x") + member(b"c") + END,
            "malformed pax record",
        ),
        (
            member(b"././@PaxHeader", b"x path=a\n", b"x") + member(b"c") + END,
            "malformed pax record",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_refuses_damaged_streams(data: bytes, reason: str) -> None:
    assert reason in refused(data).reason


def test_caps_are_checked_before_the_payload_is_read() -> None:
    """Only the header says how big: the payload is not even there to be read."""
    caps = Caps(max_name=100, max_pax=1000)
    for data, reason in [
        (header(b"././@LongLink", b"L", 102), "long name of 102 bytes over the cap of 100"),
        (header(b"././@LongLink", b"K", raw_size=b256(1 << 33)), "long link target of 8589934592"),
        (header(b"././@PaxHeader", b"x", 1001), "pax header of 1001 bytes over the cap of 1000"),
        (header(b"././@PaxHeader", b"g", raw_size=b256(1 << 40)), "pax header of 1099511627776"),
    ]:
        assert reason in refused(data, caps).reason
    assert (
        "pax path of 101 bytes"
        in refused(pax({"path": b"a" * 101}) + member(b"c") + END, caps).reason
    )
    err = refused(member(b"a/b/c/d") + END, Caps(max_depth=3))
    assert (err.name, err.reason) == ("a/b/c/d", "path deeper than 3 components")
    err = refused(member(b"a") + member(b"b") + END, Caps(max_members=1))
    assert (err.name, err.reason) == ("b", "more than 1 members")
    err = refused(header(b"a", raw_size=b256(10 << 30)) + END, Caps(max_size=1 << 30))
    assert err.name == "a" and "over the cap" in err.reason


CHAIN = "more than 8 extension headers in front of one member"


@pytest.mark.parametrize(
    ("one", "reason"),
    [
        (gnu_long(b"L", b"a" * 50), "two extension headers set the name of one member"),
        (gnu_long(b"K", b"a" * 50), "two extension headers set the linkname of one member"),
        (pax({"path": b"a" * 50}), "two extension headers set the name of one member"),
        (pax({"mtime": b"1"}), CHAIN),
        (pax({"comment": b"c"}, kind=b"g"), CHAIN),
    ],
    ids=["gnu-long-name", "gnu-long-link", "pax-path", "pax-mtime", "pax-global"],
)
def test_two_thousand_chained_headers_are_refused_without_recursion(
    tmp_path: Path, one: bytes, reason: str
) -> None:
    """tarfile recurses once per header (RecursionError); we refuse cleanly."""
    data = one * 2000 + member(b"f", b"x") + END
    assert refused(data).reason == reason
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PayloadCorrupt, match=f"^damaged payload: {reason}"):
        extract_tar_stream(io.BytesIO(data), str(dest), BIG)
    assert os.listdir(dest) == []


def test_the_extractor_refuses_overlong_and_overdeep_names(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    deep = pax({"path": b"d/" * 1100 + b"f"}) + member(b"f", b"x") + END
    with pytest.raises(PayloadCorrupt, match=r"unsafe member .* path deeper than 1024 components"):
        extract_tar_stream(io.BytesIO(deep), str(dest), BIG)
    long = gnu_long(b"L", b"n" * 5000) + member(b"f", b"x") + END
    with pytest.raises(PayloadCorrupt, match="long name of 5001 bytes over the cap of 4096"):
        extract_tar_stream(io.BytesIO(long), str(dest), BIG)
    assert os.listdir(dest) == []


def test_extract_without_file_hashes(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    data = member(b"a", b"hello") + header(b"h", b"1", link=b"a") + END
    result = extract_tar_stream(io.BytesIO(data), str(dest), BIG, hash_files=False)
    assert [(e.path, e.kind, e.size, e.digest) for e in result.entries] == [
        ("a", "file", 5, ""),
        ("h", "hardlink", 5, ""),
    ]
    assert (dest / "h").read_bytes() == b"hello"


# --- memory bombs, measured in a child process ---------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import zstandard
    from launcher.cache.extract import Limits, extract_tar_stream
    from launcher.cache.readahead import ReadAhead
    from launcher.errors import PayloadCorrupt
    from launcher.cache.zstd import MAX_WINDOW_LOG

    def peak_kib():
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:"))

    limits = Limits(max_members=1000, max_file_size=1 << 30, max_total_size=1 << 30)
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << MAX_WINDOW_LOG)
    with open(sys.argv[2], "rb") as raw:
        reader = dctx.stream_reader(raw, read_size=1 << 20, read_across_frames=False)
        with ReadAhead(reader) as ahead:
            try:
                extract_tar_stream(ahead, sys.argv[3], limits)
                print("extracted")
            except PayloadCorrupt as exc:
                print("refused:", exc.message)
    print("peak_kib:", peak_kib())
    """
)


def _compress(path: Path, pieces: Iterator[bytes], window_log: int = 0) -> int:
    """Stream pieces into a .tar.zst (never all in memory); returns its size."""
    params = zstandard.ZstdCompressionParameters.from_level(
        3, window_log=window_log, enable_ldm=bool(window_log)
    )
    compressor = zstandard.ZstdCompressor(compression_params=params)
    with open(path, "wb") as fh, compressor.stream_writer(fh, closefd=False) as writer:
        for piece in pieces:
            writer.write(piece)
    return path.stat().st_size


def _repeat(byte: bytes, total: int) -> Iterator[bytes]:
    block = byte * MIB
    while total:
        step = min(total, MIB)
        yield block[:step]
        total -= step


def _pax_bomb() -> Iterator[bytes]:
    total = 512 * MIB
    head = f"{total} path=".encode()
    yield header(b"././@PaxHeader", b"x", total)
    yield head
    yield from _repeat(b"a", total - len(head) - 1)
    yield b"\n"
    yield member(b"f", b"x" * 19) + END


def _long_name_bomb() -> Iterator[bytes]:
    total = 64 * MIB
    yield header(b"././@LongLink", b"L", total, magic=b"ustar  \x00")
    yield from _repeat(b"n", total - 1)
    yield b"\x00"
    yield member(b"f", b"x" * 19) + END


def _widest_window() -> Iterator[bytes]:
    """A valid member whose frame uses the largest window the launcher accepts."""
    block = random.Random(7).randbytes(MIB)
    yield header(b"f", b"0", 40 * MIB)
    for i in range(40):
        yield block if i % 2 else block[::-1]
    yield END


@pytest.mark.parametrize(
    ("bomb", "reason"),
    [
        (_pax_bomb, "pax header of 536870912 bytes over the cap"),
        (_long_name_bomb, "long name of 67108864 bytes over the cap"),
        (_widest_window, ""),
    ],
    ids=["pax-512MiB", "gnu-long-name-64MiB", "window-32MiB"],
)
def test_header_bombs_are_refused_in_bounded_memory(
    tmp_path: Path, bomb: Callable[[], Iterator[bytes]], reason: str
) -> None:
    """A tiny payload whose header claims hundreds of MiB: refused from the size field,
    the whole child process (decoder thread included) peaking under 64 MB. And the
    largest zstd window the launcher accepts, on a valid member, also stays under."""
    from launcher.cache.zstd import MAX_WINDOW_LOG

    payload = tmp_path / "bomb.tar.zst"
    if reason:
        assert _compress(payload, bomb()) < 64 << 10  # what makes it a bomb: it is tiny
    else:
        _compress(payload, bomb(), window_log=MAX_WINDOW_LOG)
    dest = tmp_path / "dest"
    dest.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), str(payload), str(dest)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    peak_mb = int(lines[1].split()[1]) * 1024 / 1e6
    assert peak_mb < 64, f"peak RSS {peak_mb:.1f} MB"
    if not reason:
        assert lines[0] == "extracted"
        assert (dest / "f").stat().st_size == 40 * MIB
        return
    assert lines[0].startswith("refused: damaged payload: ") and reason in lines[0], lines
    assert os.listdir(dest) == []


# ru_maxrss of the wrapper's children: the single file and anything it starts.
WRAPPER = (
    "import resource, subprocess, sys;"
    " code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode;"
    " print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def _chained_headers() -> Iterator[bytes]:
    yield pax({"mtime": b"1"}) * 2000 + member(b"f", b"x") + END


@pytest.mark.parametrize(
    ("bomb", "reason"),
    [
        (_pax_bomb, "over the cap"),
        (_long_name_bomb, "over the cap"),
        (_chained_headers, "more than 8 extension headers"),
    ],
    ids=["pax-512MiB", "gnu-64MiB", "2000-chained"],
)
def test_the_single_file_refuses_header_bombs_in_bounded_memory(
    app: Path, tmp_path: Path, bomb: Callable[[], Iterator[bytes]], reason: str
) -> None:
    """The real launcher (host Python, vendored zstandard) with a bomb as its payload:
    exit 65 with one line (no traceback), peak RSS of its process tree under 64 MB,
    nothing published."""
    packed = tmp_path / "bomb.tar.zst"
    _compress(packed, bomb())
    payload = packed.read_bytes()

    def edit(manifest: dict) -> None:
        manifest["digest"] = "sha256:" + hashlib.sha256(payload).hexdigest()
        manifest["compressed_size"] = len(payload)

    bad = rewrite_app(app, tmp_path / "auto-review", payload=payload, edit_manifest=edit)
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_REVIEW_")}
    env["AUTO_REVIEW_CACHE_DIR"] = str(cache)
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, HOST_PYTHON, str(bad), "cache", "prepare"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    code, max_kib = map(int, proc.stdout.split())
    assert code == 65, proc.stderr
    assert max_kib * 1024 / 1e6 < 64, f"peak RSS {max_kib * 1024 / 1e6:.1f} MB"
    assert reason in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    bundles = cache / "v1" / "bundles"
    assert not [p for p in bundles.iterdir() if p.is_dir()]


# --- the read-ahead thread ------------------------------------------------------------


def test_readahead_delivers_everything_in_order() -> None:
    data = os.urandom(5 * MIB + 123)
    for source in (io.BytesIO(data), Unbuffered(data)):  # readinto, then read
        with ReadAhead(source, chunk_size=MIB, depth=2) as ahead:
            # each chunk is copied: it is valid only until the next call
            got = b"".join(bytes(chunk) for chunk in iter(ahead.chunk, b""))
            assert ahead.chunk() == b""  # and stays at the end
        assert got == data


class Unbuffered:
    """A stream with read() only."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)

    def read(self, n: int) -> bytes:
        return self.stream.read(n)


class Counting(io.RawIOBase):
    """An endless stream whose n-th readinto fills the buffer with the byte n % 256, and
    tells a waiting test about each read."""

    def __init__(self) -> None:
        self.reads = 0
        self.buffers: set[int] = set()
        self.cond = threading.Condition()

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray) -> int:  # type: ignore[override]
        with self.cond:
            buf[:] = bytes([self.reads % 256]) * len(buf)
            self.buffers.add(id(buf))
            self.reads += 1
            self.cond.notify_all()
        return len(buf)


def test_readahead_reuses_its_buffers_and_never_one_handed_out() -> None:
    source = Counting()
    with ReadAhead(source, chunk_size=4096, depth=3) as ahead:
        for n in range(40):
            chunk = ahead.chunk()
            ready = n + 5  # the thread reads ahead until every buffer is in use
            with source.cond:
                assert source.cond.wait_for(lambda r=ready: source.reads >= r, timeout=60)
            # the chunk handed out is intact while the thread fills the others
            assert chunk == bytes([n % 256]) * 4096
    assert len(source.buffers) == 3 + 2  # depth queued, one lent, one being filled


def test_readahead_feeds_the_extractor_from_a_real_decoder(tmp_path: Path) -> None:
    body = os.urandom(3 * MIB)
    tar = member(b"big", body) + member(b"small", b"s") + END
    packed = zstandard.ZstdCompressor(level=1).compress(tar)
    dctx = zstandard.ZstdDecompressor()
    dest = tmp_path / "dest"
    dest.mkdir()
    with ReadAhead(lambda: dctx.stream_reader(io.BytesIO(packed))) as ahead:
        result = extract_tar_stream(ahead, str(dest), BIG)  # type: ignore[arg-type]
    assert result.total_size == len(body) + 1
    assert (dest / "big").read_bytes() == body


class Failing:
    """Gives `good` chunks, then raises."""

    def __init__(self, good: int, exc: BaseException) -> None:
        self.good, self.exc = good, exc

    def read(self, n: int) -> bytes:
        if not self.good:
            raise self.exc
        self.good -= 1
        return b"c" * n


def test_readahead_errors_reach_the_reader_after_the_data() -> None:
    error = zstandard.ZstdError("corrupted block")
    with ReadAhead(Failing(3, error), chunk_size=10, depth=2) as ahead:
        assert [ahead.chunk() for _ in range(3)] == [b"c" * 10] * 3
        with pytest.raises(zstandard.ZstdError) as caught:
            ahead.chunk()
        assert caught.value is error
        with pytest.raises(zstandard.ZstdError):
            ahead.chunk()


def test_readahead_factory_errors_reach_the_reader() -> None:
    def factory() -> io.BytesIO:
        raise PayloadCorrupt("no decoder", "fix")

    with ReadAhead(factory) as ahead, pytest.raises(PayloadCorrupt, match="no decoder"):
        ahead.chunk()


def test_readahead_decode_errors_surface_through_the_extractor(tmp_path: Path) -> None:
    tar = member(b"big", os.urandom(3 * MIB)) + END
    packed = bytearray(zstandard.ZstdCompressor(level=1).compress(tar))
    packed[0] ^= 0xFF  # not a zstd frame: the decoder raises on its first read
    dest = tmp_path / "dest"
    dest.mkdir()
    dctx = zstandard.ZstdDecompressor()
    stream = dctx.stream_reader(io.BytesIO(bytes(packed)))
    with ReadAhead(stream) as ahead, pytest.raises(zstandard.ZstdError):
        extract_tar_stream(ahead, str(dest), BIG)  # type: ignore[arg-type]


class Endless:
    """An infinite stream that counts its reads and tells a waiting test about each."""

    def __init__(self) -> None:
        self.reads = 0
        self.cond = threading.Condition()

    def read(self, n: int) -> bytes:
        with self.cond:
            self.reads += 1
            self.cond.notify_all()
        return b"e" * n


@pytest.mark.parametrize("kind", ["read", "readinto"])
def test_readahead_close_stops_a_blocked_reader_and_bounds_the_queue(kind: str) -> None:
    """Both ways a source is read: read(), and readinto() into buffers that go round
    (depth + 2 of them: one lent, depth queued, one filled and waiting)."""
    source = Endless() if kind == "read" else Counting()
    ahead = ReadAhead(source, chunk_size=1000, depth=3)
    assert len(ahead.chunk()) == 1000
    with source.cond:
        # One chunk taken, three queued, one read waiting to be queued: the thread blocks.
        assert source.cond.wait_for(lambda: source.reads >= 5, timeout=60)
    closer = threading.Thread(target=ahead.close)
    closer.start()
    closer.join(timeout=60)
    assert not closer.is_alive()
    assert source.reads == 5  # one taken, depth queued, one read waiting: no more
    if isinstance(source, Counting):
        assert len(source.buffers) == 5
    with pytest.raises(ValueError, match="closed"):
        ahead.chunk()
