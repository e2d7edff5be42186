"""Launcher errors: one class per failure a user can act on, each with its own exit code.

Exit codes sit in the sysexits range (64-78) so that they never collide with the
small codes the sandboxed gateway returns, which the launcher passes through.
"""

from __future__ import annotations


class ExitCode:
    """Distinct process exit codes of the launcher's own failures."""

    OK = 0
    USAGE = 2
    PAYLOAD_CORRUPT = 65  # EX_DATAERR: the embedded or cached bundle fails its checks
    PIN_NOT_FOUND = 66  # EX_NOINPUT: AUTO_REVIEW_BUNDLE names no available version
    RUNTIME_MISSING = 69  # EX_UNAVAILABLE: no usable OCI runtime / zstd backend
    SANDBOX_FAILED = 71  # EX_OSERR: the runtime exists but cannot start the sandbox
    CACHE_UNUSABLE = 73  # EX_CANTCREAT: cache root hostile, read-only or not creatable
    NO_SPACE = 74  # EX_IOERR: ENOSPC / not enough free space
    IN_USE = 75  # EX_TEMPFAIL: a version is in use by a running instance
    CONFIG = 78  # EX_CONFIG: a bad environment variable or option value


class LauncherError(Exception):
    """A failure with a one-line message that says what happened and what to do."""

    exit_code = ExitCode.SANDBOX_FAILED

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        """The message as printed to the user: what happened, then the fix."""
        text = f"auto-review: {self.message}"
        if self.fix:
            text += f" -- {self.fix}"
        return text.replace("\n", " ")


class UsageError(LauncherError):
    """The command line is wrong."""

    exit_code = ExitCode.USAGE


class PayloadCorrupt(LauncherError):
    """The bundle (embedded or cached) is damaged, unsafe or does not match its manifest."""

    exit_code = ExitCode.PAYLOAD_CORRUPT


class PinNotFound(LauncherError):
    """AUTO_REVIEW_BUNDLE or a `cache` argument names no available version."""

    exit_code = ExitCode.PIN_NOT_FOUND


class RuntimeMissing(LauncherError):
    """A required host tool (OCI runtime, zstd backend) is not available."""

    exit_code = ExitCode.RUNTIME_MISSING


class SandboxFailed(LauncherError):
    """The OCI runtime is present but cannot start the sandbox here."""

    exit_code = ExitCode.SANDBOX_FAILED


class CacheUnusable(LauncherError):
    """The cache root cannot be used safely (hostile, unwritable, wrong owner)."""

    exit_code = ExitCode.CACHE_UNUSABLE


class NoSpace(LauncherError):
    """Not enough free space to unpack."""

    exit_code = ExitCode.NO_SPACE


class InUse(LauncherError):
    """A version is in use by a running instance and cannot be removed."""

    exit_code = ExitCode.IN_USE


class ConfigError(LauncherError):
    """An environment variable or option has a value we cannot use."""

    exit_code = ExitCode.CONFIG


def raise_if_out_of_memory(exc: BaseException) -> None:
    """MemoryError when `exc` is a native library that could not be mapped: glibc's
    dlopen says "failed to map segment" when mmap fails, which, with noexec caches
    refused before any load, leaves a memory limit. Otherwise nothing."""
    if "failed to map segment" in str(exc):
        raise MemoryError from None
