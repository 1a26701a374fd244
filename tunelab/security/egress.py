"""Outbound HTTP to addresses a tenant chooses (webhooks): public addresses only.

A tenant admin names the URL, so without a check the server would fetch whatever it can reach
itself: loopback services, the cloud metadata endpoint, the office network (server-side request
forgery). The check sits where the socket is opened: `PinnedBackend.connect_tcp` resolves the
host once, refuses if any address is not public, and connects to the very address it checked, so
a DNS answer that changes between a check and a connect (rebinding) has nothing to change. Every
numeric spelling (`2130706433`, `0x7f.1`, `127.1`, `[::ffff:127.0.0.1]`) is normalised by the
resolver before the check. httpcore never follows redirects, reads no proxy from the environment
and never decompresses, so a reply is the bytes the receiver sent, read up to a cap.

An operator can allow internal receivers (`AllowList`: host names and CIDRs).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# Special-purpose ranges some Python versions' is_private/is_global miss (IANA registries).
_SPECIAL = {ipaddress.ip_network("100.64.0.0/10"): "shared (carrier-grade NAT)",
            ipaddress.ip_network("192.0.0.0/24"): "IETF protocol assignments"}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")            # embeds an IPv4 address a gateway reaches
_V4_COMPATIBLE = ipaddress.ip_network("::/96")           # deprecated ::a.b.c.d


class EgressRefused(Exception):
    """The destination is not allowed. The message is safe to show the tenant: it names the host
    and the kind of address, never the address an internal name resolved to (that is for logs)."""

    def __init__(self, message: str, address: Address | None = None):
        super().__init__(message)
        self.address = address


@dataclass(frozen=True)
class AllowList:
    """Hosts and networks an operator allows even though they are internal."""
    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "AllowList":
        """Comma- or space-separated: `hooks.internal, 10.1.0.0/16, 127.0.0.2`."""
        hosts, networks = set(), []
        for entry in text.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.rstrip(".").lower())
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.rstrip(".").lower() in self.hosts

    def allows_address(self, ip: Address) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries, which a stack or gateway may connect to."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: Address) -> str | None:
    """Why `ip` is not a public address (loopback, private, ...), or None when it is one."""
    if ip.version == 6:
        inner = _embedded_v4(ip)
        if inner is not None:
            problem = address_problem(inner)
            if problem:
                return f"{problem}, inside an IPv6 address"
    for name in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved", "site_local"):
        if getattr(ip, f"is_{name}", False):
            return name.replace("_", "-")
    for net, name in _SPECIAL.items():
        if ip.version == net.version and ip in net:
            return name
    if not ip.is_global:
        return "not global"
    return None


def numeric_host(host: str) -> Address | None:
    """The address a host name that is really a number means, in any spelling resolvers accept
    (dotted, decimal `2130706433`, octal `0177.0.0.1`, hex `0x7f.1`, short `127.1`), or None."""
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:     # inet_aton takes the BSD forms getaddrinfo takes
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def url_problem(url: str, allow: AllowList) -> str | None:
    """Why `url` cannot be a receiver, judged without DNS (delivery checks the resolved address
    again), or None."""
    try:
        u = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"not a valid URL ({exc})"
    if u.scheme not in ("http", "https") or not u.host:
        return "the URL needs http:// or https:// and a host"
    if u.userinfo:
        return "the URL must not carry a user name or password"
    host = u.host.rstrip(".").lower()
    if allow.allows_host(host):
        return None
    if host == "localhost" or host.endswith(".localhost"):
        ip = ipaddress.ip_address("127.0.0.1")
    else:
        ip = numeric_host(host)
    if ip is None or allow.allows_address(ip):
        return None
    problem = address_problem(ip)
    return f"{host} is not a public address ({problem})" if problem else None


def _getaddrinfo(host: str, port: int, seconds: float) -> list[tuple]:
    """getaddrinfo cannot be interrupted: run it on a throwaway thread and stop waiting at the
    deadline (the thread ends when the resolver gives up)."""
    box: dict = {}

    def run() -> None:
        try:
            box["ok"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True, name="egress-dns")
    t.start()
    t.join(max(seconds, 0.0))
    if "ok" in box:
        return box["ok"]
    if "error" in box:
        raise httpcore.ConnectError(f"cannot resolve {host}: {box['error']}")
    raise httpcore.ConnectTimeout(f"resolving {host} took longer than the time left")


def resolve_checked(host: str, port: int, allow: AllowList, seconds: float) -> list[Address]:
    """Every address `host` resolves to, once; refused if any of them is not allowed (a name that
    mixes public and internal answers is an attack, not a configuration)."""
    found = []
    for *_, sockaddr in _getaddrinfo(host, port, seconds):
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    if allow.allows_host(host):
        return found
    for ip in found:
        problem = address_problem(ip)
        if problem and not allow.allows_address(ip):
            raise EgressRefused(f"{host} resolves to an address that is not public ({problem})", ip)
    return found


class DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation gets at most the time left until one deadline: a receiver
    that sends a byte a second cannot stretch a per-read timeout forever."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float):
        self._inner, self._deadline = inner, deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("the delivery's time is up")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        # server_hostname is the URL's host: SNI and certificate checks use the name, not the IP.
        inner = self._inner.start_tls(ssl_context, server_hostname, self._left(timeout, httpcore.ConnectTimeout))
        return DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Resolves and checks the host at connect time, then connects to a checked address literally
    (no second lookup)."""

    def __init__(self, allow: AllowList, deadline: float):
        self.allow, self.deadline, self._tcp = allow, deadline, httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:
        addresses = resolve_checked(host, port, self.allow, self.deadline - time.monotonic())
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for ip in addresses:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("the delivery's time is up")
            try:
                stream = self._tcp.connect_tcp(str(ip), port, min(left, timeout or left), local_address,
                                               socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return DeadlineStream(stream, self.deadline)
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise EgressRefused("unix sockets are not a receiver")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes          # at most the read cap


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()     # certificates verified, against the URL's host name


def post(url: str, body: bytes, headers: dict[str, str], allow: AllowList, seconds: float,
         read_cap: int = 64 * 1024) -> Reply:
    """POST `body` to `url` within `seconds` in all (resolution, connection, TLS, sending, reply),
    reading at most `read_cap` bytes of the reply. Raises EgressRefused, or httpcore's errors
    (timeouts, connection and protocol errors)."""
    deadline = time.monotonic() + seconds
    u = httpx.URL(url)
    target = httpcore.URL(scheme=u.raw_scheme, host=u.raw_host, port=u.port, target=u.raw_path)
    sent = {"Accept-Encoding": "identity", "User-Agent": "tunelab-webhooks", "Connection": "close", **headers}
    with httpcore.ConnectionPool(ssl_context=_tls(), network_backend=PinnedBackend(allow, deadline),
                                 max_connections=1, retries=0) as pool:
        with pool.stream("POST", target, headers=list(sent.items()), content=body,
                         extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), seconds)}) as r:
            data = bytearray()
            for chunk in r.iter_stream():
                data += chunk[: read_cap - len(data)]
                if len(data) >= read_cap:
                    break
    return Reply(r.status, bytes(data))
