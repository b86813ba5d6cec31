"""Where S3 requests may go: one reading of an endpoint URL for admission, policy and the dialler.

Addresses are judged after normalisation, never as text: a host that only a lenient parser reads as an
address (2852039166, 0xa9fea9fe, 0251.0376.0251.0376, 169.254.43518) is refused outright, and so are
userinfo, zone ids, and every range that reaches the node's own credentials or the link: IPv4 and IPv6
link-local (the instance metadata service, the ECS and EKS Pod Identity agents), AWS's fd00:ec2::/32, and the
IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4).
"""

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

_NETWORKS = {
    "link-local (instance metadata, the ECS and Pod Identity agents)": ("169.254.0.0/16", "fe80::/10"),
    "AWS's internal IPv6 services (metadata, Pod Identity, DNS)": ("fd00:ec2::/32",),
    "an IPv6 form of an IPv4 address": ("::ffff:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16"),
    "not a unicast address": ("0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "ff00::/8"),
}
FORBIDDEN = tuple((ipaddress.ip_network(network), why) for why, networks in _NETWORKS.items() for network in networks)
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
DNS_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")  # what inet_aton would read as a number
PATH = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@-]*)*$")  # no percent-encoding: one spelling per path


class EndpointRefused(ValueError):
    pass


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str  # lower-case DNS name without a trailing dot, or an address in its canonical text
    port: int
    path: str  # "" or /segments, no dot segments
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if self.address and self.address.version == 6 else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is never an artifact store, or None."""
    if address.is_loopback:
        return None  # the pod's own loopback: a local store in tests, nothing of the node's
    for network, why in FORBIDDEN:
        if address.version == network.version and address in network:
            return f"{address} is {why}"
    return None


def parse_endpoint(url: str) -> Endpoint:
    """The endpoint, normalised; EndpointRefused names the first problem."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise EndpointRefused(f"{url!r} is not a URL: {error}") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise EndpointRefused(f"{url!r} must start with https:// or http://")
    if "@" in parts.netloc:
        raise EndpointRefused("must not carry a user or password (user@host): credentials come from the IAM role")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise EndpointRefused("must not have a query or fragment")
    if not PATH.match(parts.path) or any(segment in (".", "..") for segment in parts.path.split("/")):
        raise EndpointRefused(f"path {parts.path!r} must be plain: no percent-encoding, no . or .. segments")
    host = (parts.hostname or "").lower()
    if not host:
        raise EndpointRefused(f"{url!r} names no host")
    address = _address(host, bracketed=parts.netloc.startswith("["))
    if address is not None:
        reason = refused_address(address)
        if reason:
            raise EndpointRefused(f"{reason}: never an artifact store")
        host = address.compressed
    return Endpoint(parts.scheme, host.rstrip("."), port or _DEFAULT_PORTS[parts.scheme], parts.path.rstrip("/"),
                    address)


def _address(host: str, bracketed: bool):
    if bracketed:
        if "%" in host:
            raise EndpointRefused("an IPv6 zone id (%...) is not allowed")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise EndpointRefused(f"[{host}] is not an IPv6 address") from None
    if not DNS_NAME.match(host):
        raise EndpointRefused(f"host {host!r} is not a DNS name (letters, digits, '-' and '.') nor an address")
    if _NUMERIC_LABEL.match(host.rstrip(".").rsplit(".", 1)[-1]):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise EndpointRefused(f"host {host!r} reads as a number: write an IPv4 address as four decimal "
                                  "numbers (a.b.c.d) or use a DNS name") from None
        return address
    return None


def resolve(endpoint: Endpoint) -> list[tuple]:
    """getaddrinfo results for the endpoint, all of them allowed: a name that resolves to any refused address
    is refused whole (a dialler connects to these very addresses, so a second lookup cannot differ)."""
    if endpoint.address is not None:
        family = socket.AF_INET6 if endpoint.address.version == 6 else socket.AF_INET
        return [(family, (endpoint.host, endpoint.port))]
    try:
        found = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ConnectionError(f"cannot resolve {endpoint.host}: {error}") from None
    for family, _, _, _, sockaddr in found:
        reason = refused_address(ipaddress.ip_address(sockaddr[0].split("%")[0]))
        if reason:
            raise EndpointRefused(f"{endpoint.host} resolves to {reason}: never an artifact store")
    return [(family, sockaddr) for family, _, _, _, sockaddr in found]
