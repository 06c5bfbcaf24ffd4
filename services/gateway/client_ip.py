"""Which address a call came from, for the failed-authentication throttle.

The gateway sees its direct peer: the gRPC peer, or, for a REST call (which this process
re-issues to itself over loopback gRPC), the HTTP client, forwarded in metadata with a
per-process proof no outside caller can know. Behind an ingress or a load balancer that
peer is the proxy, so every client would share one throttle bucket and twenty bad keys
from anyone would lock every partner behind the proxy out. When the direct peer is a
trusted proxy (`HS_GATEWAY_TRUSTED_PROXIES`, a list of CIDRs), the client is the right-most
`X-Forwarded-For` hop that is not itself a trusted proxy: hops to its right were written by
proxies we trust, hops to its left by the client, who can write anything there. A peer that
is not trusted gets its header ignored, so a client cannot pick its own bucket.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Metadata only this process can set: the gRPC peer (a pseudo-header name, which a client
# cannot send) and the HTTP client of a REST call with the proof that REST forwarded it.
PEER_KEY = ":peer"
CLIENT_ADDRESS_KEY = "x-hs-client-address"
CLIENT_PROOF_KEY = "x-hs-client-proof"
FORWARD_PROOF = secrets.token_urlsafe(24)
FORWARDED_FOR_KEY = "x-forwarded-for"
# Hops of X-Forwarded-For looked at, right to left: a chain of trusted proxies is short, and
# a header of thousands of made-up hops must not cost thousands of parses.
MAX_HOPS = 8

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class TrustedProxies:
    """The networks whose X-Forwarded-For the gateway believes (none by default)."""

    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, cidrs: Iterable[str]) -> TrustedProxies:
        """From CIDR texts such as '10.0.0.0/8'; a bad entry raises ValueError naming it."""
        nets = []
        for text in (c.strip() for c in cidrs):
            if not text:
                continue
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError as err:
                raise ValueError(f"not a network in CIDR form: {text!r}") from err
        return cls(tuple(nets))

    def trusts(self, host: str) -> bool:
        address = _address(host)
        return address is not None and any(address in net for net in self.networks)


NO_PROXIES = TrustedProxies()


def _address(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def forwarded_metadata(client_host: str | None) -> tuple[tuple[str, str], ...]:
    """What the in-process REST layer adds to name its HTTP client as the caller."""
    if not client_host:
        return ()
    return ((CLIENT_ADDRESS_KEY, client_host), (CLIENT_PROOF_KEY, FORWARD_PROOF))


def _peer_host(peer: str) -> str:
    """'ipv4:1.2.3.4:5678' / 'ipv6:[::1]:5678' / 'unix:/path' → the host part."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer


def _direct_peer(metadata: Mapping[str, str]) -> str:
    """The gRPC peer, or the HTTP client when this process's REST layer made the call."""
    host = _peer_host(metadata.get(PEER_KEY, ""))
    forwarded = metadata.get(CLIENT_ADDRESS_KEY)
    proof = metadata.get(CLIENT_PROOF_KEY, "")
    if forwarded and hmac.compare_digest(proof.encode(), FORWARD_PROOF.encode()):
        peer = _address(host)
        if peer is not None and peer.is_loopback:
            return forwarded[:64]
    return host


def client_address(metadata: Mapping[str, str], trusted: TrustedProxies = NO_PROXIES) -> str:
    """The address the throttle counts a call's failures against."""
    host = _direct_peer(metadata)
    if not trusted.networks or not trusted.trusts(host):
        return host or "unknown"
    hops = metadata.get(FORWARDED_FOR_KEY, "").split(",")[-MAX_HOPS:]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage from here leftwards: the last good hop is the best we know
        host = str(address)
        if not trusted.trusts(host):
            return host
    return host or "unknown"
