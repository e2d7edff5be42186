"""The host libzstd decoder (launcher.cache.hostzstd): what it decodes, what it refuses
(a window over the cap, truncation, damage) and that the launcher uses it, or its
vendored zstandard on a host without libzstd (a real mount namespace hides the library).
Payloads come from python-zstandard, the decoder the project otherwise ships."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from conftest import legacy_v07_frame, needs_root, run_app, without_host_libzstd

from launcher.cache import zstd
from launcher.cache.hostzstd import HostReader, HostZstdError, library, open_host_reader
from launcher.errors import PayloadCorrupt

WINDOW = 1 << 24


def sample(size: int) -> bytes:
    """Compressible but not trivial bytes (a repeated random block with edits)."""
    block = os.urandom(64 << 10)
    out = bytearray()
    while len(out) < size:
        out += block
        out += os.urandom(512)
    return bytes(out[:size])


def read_all(reader: HostReader, n: int) -> bytes:
    parts = []
    while chunk := reader.read(n):
        assert len(chunk) <= n
        parts.append(bytes(chunk))
    return b"".join(parts)


def test_this_host_has_a_usable_libzstd() -> None:
    """CI's hosts have libzstd (>= 1.4.0): the fast path is the one the suite exercises."""
    assert library() is not None


@pytest.mark.parametrize("n", [1, 4096, 1 << 20, 3 << 20])
def test_decodes_what_zstandard_encoded_in_any_read_size(n: int) -> None:
    data = sample(5 << 20)
    frame = zstandard.ZstdCompressor(level=3).compress(data)
    if n == 1:  # one byte at a time is slow: a shorter stream says the same
        data, frame = data[:100_000], zstandard.ZstdCompressor(level=3).compress(data[:100_000])
    reader = open_host_reader(io.BytesIO(frame), WINDOW)
    assert reader is not None
    assert read_all(reader, n) == data
    assert reader.read(n) == b""  # and stays at the end


@pytest.mark.parametrize("after", ["frame", "garbage", "one byte"])
def test_anything_after_the_first_frame_is_refused(after: str) -> None:
    """The build writes one frame: a second one (which libzstd might read in a legacy
    format, past the window cap) or garbage after it is refused, not skipped."""
    first = zstandard.ZstdCompressor().compress(b"a" * 100_000)
    tail = {
        "frame": zstandard.ZstdCompressor().compress(b"b" * 100_000),
        "garbage": os.urandom(5000),
        "one byte": b"\0",
    }[after]
    reader = open_host_reader(io.BytesIO(first + tail), WINDOW)
    assert reader is not None
    with pytest.raises(HostZstdError, match="follows the zstd frame"):
        read_all(reader, 1 << 20)
    exact = open_host_reader(io.BytesIO(first), WINDOW)
    assert exact is not None and read_all(exact, 1 << 20) == b"a" * 100_000


def test_a_frame_whose_window_is_over_the_cap_is_refused_before_it_is_decoded() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(
        1, window_log=27, write_content_size=False
    )
    stream = zstandard.ZstdCompressor(compression_params=params).compressobj()  # size unknown:
    frame = stream.compress(b"x" * 1000) + stream.flush()  # the 128 MiB window stays
    assert zstandard.get_frame_parameters(frame).window_size == 1 << 27
    reader = open_host_reader(io.BytesIO(frame), WINDOW)
    assert reader is not None
    with pytest.raises(HostZstdError, match=r"memory|window"):
        reader.read(1 << 20)
    with pytest.raises(ValueError):  # closed: its decoder was freed with the error
        reader.read(1 << 20)


def test_a_truncated_frame_is_an_error_not_a_short_stream() -> None:
    frame = zstandard.ZstdCompressor(level=3).compress(sample(2 << 20))
    reader = open_host_reader(io.BytesIO(frame[: len(frame) // 2]), WINDOW)
    assert reader is not None
    with pytest.raises(HostZstdError, match="ends inside"):
        read_all(reader, 1 << 20)


def test_damage_is_found_by_the_frame_checksum_at_least() -> None:
    data = sample(2 << 20)
    frame = bytearray(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data))
    frame[len(frame) // 2] ^= 0xFF
    reader = open_host_reader(io.BytesIO(bytes(frame)), WINDOW)
    assert reader is not None
    with pytest.raises(HostZstdError):
        read_all(reader, 1 << 20)


def test_its_errors_are_among_the_decompression_errors_the_cache_maps() -> None:
    assert HostZstdError in zstd.decompression_errors()


def test_not_a_zstd_frame_at_all() -> None:
    reader = open_host_reader(io.BytesIO(b"PK\x03\x04" + b"\0" * 100), WINDOW)
    assert reader is not None
    with pytest.raises(HostZstdError, match=r"[Uu]nknown frame descriptor"):
        reader.read(100)


# --- the launcher ------------------------------------------------------------------


def env_for(cache: Path) -> dict[str, str]:
    env = dict(os.environ, AUTO_REVIEW_CACHE_DIR=str(cache))
    env.pop("AUTO_REVIEW_BUNDLE", None)
    return env


def test_the_launcher_decodes_with_the_host_library(app: Path, tmp_path: Path) -> None:
    """No zstd module is published into the cache: the host's libzstd did the work."""
    cache = tmp_path / "cache"
    result = run_app(app, "cache", "prepare", env=env_for(cache))
    assert result.returncode == 0, result.stderr
    assert not (cache / "v1" / "vendor").exists()
    assert run_app(app, "cache", "verify", env=env_for(cache)).returncode == 0


@needs_root
def test_without_libzstd_the_vendored_decoder_unpacks_the_same_tree(
    app: Path, tmp_path: Path
) -> None:
    host, vendored = tmp_path / "host", tmp_path / "vendored"
    assert run_app(app, "cache", "prepare", env=env_for(host)).returncode == 0
    result = run_app(app, "cache", "prepare", env=env_for(vendored), prefix=without_host_libzstd())
    assert result.returncode == 0, result.stderr
    [module] = [p for p in (vendored / "v1" / "vendor").iterdir() if p.is_dir()]
    assert (module / "zstandard").is_dir()
    for cache in (host, vendored):
        assert run_app(app, "cache", "verify", env=env_for(cache)).returncode == 0
    [a] = (host / "v1" / "bundles").glob("sha256-*[0-9a-f]")
    [b] = (vendored / "v1" / "bundles").glob("sha256-*[0-9a-f]")
    assert (a / "files.tsv").read_bytes() == (b / "files.tsv").read_bytes()


@pytest.mark.parametrize("n", [1, 7, 4096])
@pytest.mark.parametrize("checksum", [False, True])
def test_small_reads_at_the_end_of_the_input_are_flushed_not_called_truncated(
    n: int, checksum: bool
) -> None:
    """The whole frame arrives in one read: once the input is used up the decoder still
    holds output to hand out, which is not a truncation."""
    data = os.urandom(1000) * 300
    frame = zstandard.ZstdCompressor(level=3, write_checksum=checksum).compress(data)
    reader = open_host_reader(io.BytesIO(frame), WINDOW)
    assert reader is not None
    assert read_all(reader, n) == data


def test_an_empty_input_is_a_truncated_frame() -> None:
    reader = open_host_reader(io.BytesIO(b""), WINDOW)
    assert reader is not None
    with pytest.raises(HostZstdError, match="ends inside"):
        reader.read(10)


def zstd_line(app: Path, tmp_path: Path, prefix: list[str] | None = None) -> dict:
    result = run_app(app, "doctor", "--json", env=env_for(tmp_path / "cache"), prefix=prefix)
    [found] = [i for i in json.loads(result.stdout)["items"] if i["name"] == "zstd"]
    return found


def test_doctor_names_the_decoder_a_cold_start_uses(app: Path, tmp_path: Path) -> None:
    found = zstd_line(app, tmp_path)
    assert found["ok"] and found["detail"].startswith("the host's libzstd 1."), found


@needs_root
def test_doctor_names_the_vendored_decoder_on_a_host_without_libzstd(
    app: Path, tmp_path: Path
) -> None:
    found = zstd_line(app, tmp_path, prefix=without_host_libzstd())
    assert found["ok"] and found["detail"].startswith("vendored zstandard for cpython-"), found


def test_a_legacy_format_frame_is_refused_before_the_library_sees_it() -> None:
    """The host's libzstd decodes the pre-1.0 formats too, and their streaming decoder
    ignores ZSTD_d_windowLogMax (it allocates the up to 128 MiB their header asks for):
    open_reader reads nothing but zstd frames."""
    frame = legacy_v07_frame(b"", 2 * WINDOW)  # 2 * WINDOW bytes from a 2**27 window
    bare = open_host_reader(io.BytesIO(frame), WINDOW)
    assert bare is not None
    try:  # the hazard: libzstd alone decodes it, past the cap
        decoded = len(read_all(bare, 1 << 20))
    except HostZstdError:  # a libzstd built without legacy support refuses it anyway
        decoded = 0
    assert decoded in (0, 2 * WINDOW)
    reader = zstd.open_reader(io.BytesIO(frame), None, WINDOW)  # type: ignore[arg-type]
    with pytest.raises(PayloadCorrupt, match="does not start with a zstd frame"):
        reader.read(1 << 20)


def test_open_reader_passes_a_zstd_frame_through_whatever_the_read_sizes() -> None:
    data = sample(1 << 20)
    frame = zstandard.ZstdCompressor(level=3).compress(data)

    class Trickle(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:  # at most 3 bytes a call
            return super().read(min(3, n if n is not None and n >= 0 else 3))

    reader = zstd.open_reader(Trickle(frame), None, WINDOW)  # type: ignore[arg-type]
    assert b"".join(iter(lambda: bytes(reader.read(1 << 20)), b"")) == data


def test_a_libzstd_that_cannot_allocate_a_decoder_leaves_it_to_the_vendored_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ZSTD_createDCtx returning NULL (no memory, or an odd library) is no traceback: the
    caller falls back to the vendored decoder."""
    import launcher.cache.hostzstd as hostzstd

    class NoMemory:  # the C library's side, as a host's broken libzstd would answer
        def ZSTD_createDCtx(self) -> int:
            return 0

    monkeypatch.setattr(hostzstd, "_loaded", [NoMemory()])
    assert open_host_reader(io.BytesIO(b""), WINDOW) is None


def test_a_libzstd_that_cannot_be_mapped_for_lack_of_memory_is_a_memory_error() -> None:
    """Under an address-space limit that leaves no room to map the library, dlopen
    fails ("failed to map segment"): that is memory (the launcher's out-of-memory line),
    not a host without libzstd (the vendored decoder, which would fail the same way)."""
    code = (
        "import resource, sys; sys.path.insert(0, sys.argv[1])\n"
        "from launcher.cache import hostzstd\n"
        "vm = int([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1])\n"
        "resource.setrlimit(resource.RLIMIT_AS, ((vm << 10) + (256 << 10), -1))\n"
        "try:\n    print(hostzstd.library())\nexcept MemoryError:\n    print('MemoryError')\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, root],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.stdout.strip() == "MemoryError", out.stdout + out.stderr


def test_a_planted_libzstd_that_is_no_library_leaves_it_to_the_vendored_decoder(
    app: Path, tmp_path: Path
) -> None:
    """LD_LIBRARY_PATH names a dir holding a `libzstd.so.1` that is no ELF (a stray or
    planted file; a working library there is the user's own choice, as LD_PRELOAD is):
    dlopen fails, the vendored decoder unpacks the same tree, and doctor says so."""
    planted = tmp_path / "lib"
    planted.mkdir()
    (planted / "libzstd.so.1").write_bytes(b"#!/bin/sh\necho not a library\n")
    env = dict(env_for(tmp_path / "cache"), LD_LIBRARY_PATH=str(planted))
    result = run_app(app, "cache", "prepare", env=env)
    assert result.returncode == 0, result.stderr
    assert [p for p in (tmp_path / "cache" / "v1" / "vendor").iterdir() if p.is_dir()]
    assert run_app(app, "cache", "verify", env=env).returncode == 0
    doctor = run_app(app, "doctor", "--json", env=env)
    [found] = [i for i in json.loads(doctor.stdout)["items"] if i["name"] == "zstd"]
    assert found["detail"].startswith("vendored zstandard for cpython-"), found
