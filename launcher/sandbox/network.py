"""The sandbox's network: a namespace of its own, with slirp4netns for egress.

AUTO_REVIEW_NETWORK=isolated (default): the container gets its own network
namespace. Commands that reach the network get slirp4netns attached to it (as
rootless podman does): a tap device with NAT to the outside world, the host's
loopback refused (--disable-host-loopback), the host's other addresses
(where listeners on 0.0.0.0 wait) routed as "prohibit" inside the namespace
(the sandbox has no CAP_NET_ADMIN to change that), and only `serve`'s listen
port forwarded in from the host. Commands that need no network (check, probe,
review --path without an LLM or a forge) keep only the namespace's loopback.
AUTO_REVIEW_HOST_LOOPBACK=1 is the explicit opt-in for services on this host:
the host's 127.0.0.1 is then reachable as 10.0.2.2 from inside (every port),
and so are its other addresses.
AUTO_REVIEW_NETWORK=host: the host's network, as before (with a warning).

slirp4netns over pasta: measured on the CI machine class, slirp4netns is ready
in ~3 ms against ~20 ms for pasta (Debian 12 builds), it exits by itself when the
lifeline closes (--exit-fd), and it opens the namespace as root without the
privilege dance pasta needs (pasta drops to nobody before opening it); see
docs/SANDBOX.md. This module decides; launcher.sandbox.usernet starts and configures.
"""

from __future__ import annotations

import os
import sys

from launcher import settings
from launcher.errors import ConfigError, RuntimeMissing, SandboxFailed

DNS_ADDR = "10.0.2.3"  # slirp4netns's built-in DNS forwarder
DEFAULT_BIND = "127.0.0.1:8080"  # the gateway's own default for AR_GATEWAY_BIND
TUN = "/dev/net/tun"
INSTALL = "install it: apt-get install slirp4netns (dnf install slirp4netns)"
# `probe` actions that reach the network
NETWORK_PROBES = ("clone", "connect")
HOST_ALIAS = "10.0.2.2"  # the host's loopback, as AUTO_REVIEW_HOST_LOOPBACK=1 maps it
PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


def mode() -> str:
    """AUTO_REVIEW_NETWORK, checked; `host` says what it gives up."""
    value = settings.network()
    if value == "host":
        sys.stderr.write(
            "auto-review: warning: AUTO_REVIEW_NETWORK=host: the sandbox shares the host's"
            " network (its loopback and abstract unix sockets included)\n"
        )
    return value


def host_loopback() -> bool:
    """AUTO_REVIEW_HOST_LOOPBACK=1: the host's 127.0.0.1 is reachable as 10.0.2.2."""
    return settings.host_loopback()


def needs_stack(argv: list[str]) -> bool:
    """Whether the gateway command reaches the network (and so needs slirp4netns)."""
    command = argv[0] if argv else ""
    if command in ("serve", "gateway", "preflight", "webhook"):
        return True
    if command == "probe":
        return len(argv) > 1 and argv[1] in NETWORK_PROBES
    if command == "review":
        local = any(a == "--path" or a.startswith("--path=") for a in argv)
        posts = any(a == "--pr" or a.startswith("--pr=") for a in argv)
        return not local or posts or bool(os.environ.get("LLM_BASE_URL", "").strip())
    return False


def slirp4netns() -> str:
    """The slirp4netns binary, or a one-line error naming the package."""
    from launcher.sandbox.runtime import which

    path = which("slirp4netns")
    if path is None:
        raise RuntimeMissing(
            "slirp4netns is not installed (AUTO_REVIEW_NETWORK=isolated needs it)",
            INSTALL + ", or set AUTO_REVIEW_NETWORK=host to share the host's network",
        )
    if not os.access(TUN, os.R_OK | os.W_OK):
        raise SandboxFailed(
            f"{TUN} is not usable by this user (slirp4netns opens it)",
            f"as root: chmod 0666 {TUN} (the distributions' default), or AUTO_REVIEW_NETWORK=host",
        )
    return path


def serve_listen(argv: list[str]) -> tuple[str, str]:
    """(where it was set, ADDR:PORT) `serve` listens on: --listen, else AR_GATEWAY_BIND,
    else the gateway's default 127.0.0.1:8080."""
    given = None
    args = iter(argv[1:])
    for arg in args:
        if arg == "--listen":
            given = next(args, "")
        elif arg.startswith("--listen="):
            given = arg.partition("=")[2]
    if given is not None:
        return "--listen", given.strip()
    bind = os.environ.get("AR_GATEWAY_BIND", "").strip()
    return ("AR_GATEWAY_BIND", bind) if bind else ("the default", DEFAULT_BIND)


def without_listen(argv: list[str]) -> list[str]:
    """`argv` without --listen: with the port forwarded, the launcher owns the address."""
    out, args = [], iter(argv)
    for arg in args:
        if arg == "--listen":
            next(args, None)
        elif not arg.startswith("--listen="):
            out.append(arg)
    return out


def serve_forward(argv: list[str]) -> tuple[str, int] | None:
    """(host address, port) to forward for `serve`, from --listen or AR_GATEWAY_BIND;
    None for the other commands."""
    if not argv or argv[0] not in ("serve", "gateway"):
        return None
    where, text = serve_listen(argv)
    host, sep, port = text.rpartition(":")
    if host in ("localhost", ""):
        host = "127.0.0.1"
    if not sep or not port.isdigit() or not _is_ipv4(host):
        raise ConfigError(
            f"{where} {text!r}: with the isolated network it must be IPV4:PORT",
            "use e.g. 127.0.0.1:8080 or 0.0.0.0:8080, or AUTO_REVIEW_NETWORK=host",
        )
    if not 0 < int(port) <= 65535:
        raise ConfigError(
            f"{where} {text!r}: the isolated network forwards a fixed port",
            "give a port from 1 to 65535, or set AUTO_REVIEW_NETWORK=host",
        )
    return host, int(port)


def refuse_host_loopback(argv: list[str]) -> None:
    """ConfigError for a URL the command uses that names this host's loopback: inside the
    isolated network 127.0.0.1 is the sandbox's own, and the call would fail much later
    with "Connection refused". The host is reached as 10.0.2.2, by explicit opt-in."""
    for name, url in used_urls(argv):
        scheme, host, port = url_parts(url)
        if not is_loopback(host):
            continue
        opt_in = "" if host_loopback() else "set AUTO_REVIEW_HOST_LOOPBACK=1 and "
        raise ConfigError(
            f"{name} names {host}, this host's loopback, which the sandbox's isolated network"
            " cannot reach (inside, it is the sandbox's own)",
            f"{opt_in}use {scheme}://{HOST_ALIAS}{':' + port if port else ''} for a service"
            " on this host, or set AUTO_REVIEW_NETWORK=host",
        )


def used_urls(argv: list[str]) -> list[tuple[str, str]]:
    """(setting, URL) of what the command will reach: the LLM and proxies always, the
    forge for `serve`, `preflight`, `webhook` and `review --post`, the job database for
    `serve`, the repository of `review --repo`."""
    names = ["LLM_BASE_URL", *PROXIES]
    if argv[0] in ("serve", "gateway", "preflight", "webhook") or "--post" in argv:
        names += ["FORGEJO_BASE_URL", "GITHUB_API_URL"]
    if argv[0] in ("serve", "gateway"):
        names.append("AR_QUEUE_URL")
    found = [(name, os.environ.get(name, "").strip()) for name in names]
    args = iter(argv[1:])
    for arg in args:
        if arg == "--repo":
            found.append(("--repo", next(args, "")))
        elif arg.startswith("--repo="):
            found.append(("--repo", arg.partition("=")[2]))
    return [(name, url) for name, url in found if url]


def url_parts(url: str) -> tuple[str, str, str]:
    """(scheme, host, port) of a URL, without urllib (the warm path pays for imports)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "http", url  # proxies are often given as host:port
    netloc = rest.split("/", 1)[0].rpartition("@")[2]
    if netloc.startswith("["):
        host, _, port = netloc[1:].partition("]")
        return scheme, host, port.lstrip(":")
    host, _, port = netloc.partition(":")
    return scheme, host.lower(), port


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8, ::1 or 0.0.0.0 (which also means this host)."""
    if host == "localhost" or host.endswith(".localhost") or host in ("::1", "0.0.0.0"):
        return True
    return _is_ipv4(host) and host.split(".")[0] == "127"


def _is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def resolv_conf(host_file: str | None, run_dir: str) -> str:
    """A resolv.conf naming slirp4netns's DNS forwarder, with the host's search/options lines
    (the host's own nameserver may be a loopback address, which is not reachable inside)."""
    keep = []
    if host_file:
        try:
            with open(host_file, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
            keep = [ln for ln in lines if ln.split()[:1] in (["search"], ["options"])]
        except OSError:
            pass
    path = os.path.join(run_dir, "resolv.conf")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join([f"nameserver {DNS_ADDR}", *keep]) + "\n")
    return path
