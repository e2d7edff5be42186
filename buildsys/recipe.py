"""The build's inputs: where they live, the parsed recipe, the pins, one error type."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
PAYLOAD = HERE / "payload"
RECIPE = PAYLOAD / "rootfs.toml"
DEFAULT_OUT = HERE / "dist" / "auto-review"


class BuildError(Exception):
    """A build input is missing or wrong; the message names it."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The parsed payload/rootfs.toml."""

    data: dict

    @classmethod
    def load(cls, path: Path = RECIPE) -> Recipe:
        """Read and parse the recipe, with a one-line error on failure."""
        try:
            with open(path, "rb") as fh:
                return cls(tomllib.load(fh))
        except OSError as exc:
            raise BuildError(f"cannot read recipe {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise BuildError(f"recipe {path} is not valid TOML: {exc}") from exc

    def section(self, name: str) -> dict:
        """A required table of the recipe."""
        try:
            return self.data[name]
        except KeyError:
            raise BuildError(f"recipe {RECIPE.name} has no [{name}] table") from None

    @property
    def required(self) -> list[str]:
        return list(self.section("contract")["required"])

    @property
    def forbidden(self) -> frozenset[str]:
        return frozenset(self.section("contract")["forbidden"])


def pinned_requirements(extra: str | None = None) -> dict[str, str]:
    """name -> version of the launcher's runtime deps (or of an extra), from pyproject.toml."""
    with open(HERE / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    deps = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return dict(d.split("==", 1) for d in deps)


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH, else the last commit time, else an error."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    proc = subprocess.run(
        ["git", "-C", str(HERE), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode == 0 and proc.stdout.strip():
        return int(proc.stdout.strip())
    raise BuildError("no SOURCE_DATE_EPOCH and no git history: set SOURCE_DATE_EPOCH")


def project_version() -> str:
    with open(HERE / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def lookup_user(name: str) -> tuple[int, int]:
    """uid/gid of a user from payload/etc/passwd."""
    for line in (PAYLOAD / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2]), int(fields[3])
    raise BuildError(f"user {name!r} is not in payload/etc/passwd")
