"""The failed-authentication throttle: counts failures only, refuses for one window with a
retry time, forgets least-recent subjects first so its memory stays bounded; and the client
address it counts cannot be forged by a caller."""

from __future__ import annotations

import grpc
import pytest

from services.common.grpc.errors import ApiError
from services.gateway.client_ip import (
    CLIENT_ADDRESS_KEY,
    CLIENT_PROOF_KEY,
    FORWARDED_FOR_KEY,
    PEER_KEY,
    TrustedProxies,
    client_address,
    forwarded_metadata,
)
from services.gateway.ratelimit import AuthThrottle
from services.gateway.settings import GatewaySettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refuses_after_the_failures_for_one_window_then_forgives() -> None:
    clock = Clock()
    throttle = AuthThrottle(per_address=3, per_key=5, window_s=60, clock=clock)
    subjects = ["addr:10.0.0.1"]
    for _ in range(3):
        throttle.check(subjects)
        throttle.failed(subjects)
    clock.now += 20
    with pytest.raises(ApiError) as exc:
        throttle.check(subjects)
    err = exc.value
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.reason == "AUTH_THROTTLED"
    assert err.retry_after_s == pytest.approx(40)
    throttle.check(["addr:10.0.0.2"])  # another address is not affected
    clock.now += 41
    throttle.check(subjects)  # the window is over


def test_keys_have_their_own_higher_limit() -> None:
    throttle = AuthThrottle(per_address=2, per_key=4, window_s=60, clock=Clock())
    for i in range(4):
        throttle.failed([f"addr:10.0.1.{i}", "key:abcdef012345"])  # one failure per address
    for i in range(4):
        throttle.check([f"addr:10.0.1.{i}"])
    with pytest.raises(ApiError):
        throttle.check(["addr:10.0.2.1", "key:abcdef012345"])
    throttle.check(["addr:10.0.2.1", "key:0123456789ab"])


def test_successful_calls_never_count() -> None:
    throttle = AuthThrottle(per_address=1, per_key=1, window_s=60, clock=Clock())
    for _ in range(1000):
        throttle.check(["addr:10.0.0.9", "key:abcdef012345"])
    assert len(throttle) == 0


def test_memory_is_bounded_and_least_recent_subjects_go_first() -> None:
    throttle = AuthThrottle(per_address=2, per_key=2, max_subjects=1000, clock=Clock())
    throttle.failed(["addr:keep"])
    for i in range(50_000):
        throttle.failed([f"addr:10.{i // 65536}.{i // 256 % 256}.{i % 256}"])
        if i % 500 == 0:
            throttle.failed(["addr:keep"])  # recently failing: stays
    assert len(throttle) == 1000
    throttle.failed(["addr:keep"])
    with pytest.raises(ApiError):
        throttle.check(["addr:keep"])


def test_the_client_address_is_the_peer_unless_this_process_forwarded_it() -> None:
    assert client_address({PEER_KEY: "ipv4:203.0.113.7:51234"}) == "203.0.113.7"
    assert client_address({PEER_KEY: "ipv6:[2001:db8::1]:443"}) == "2001:db8::1"
    # REST in this process names its HTTP client, with the per-process proof...
    forwarded = dict(forwarded_metadata("198.51.100.4"))
    assert client_address({PEER_KEY: "ipv4:127.0.0.1:4000", **forwarded}) == "198.51.100.4"
    # ...which an outside caller cannot produce, and which counts only over loopback.
    forged = {CLIENT_ADDRESS_KEY: "198.51.100.99", CLIENT_PROOF_KEY: "guess"}
    assert client_address({PEER_KEY: "ipv4:127.0.0.1:4000", **forged}) == "127.0.0.1"
    remote = {PEER_KEY: "ipv4:203.0.113.7:51234", **forwarded}
    assert client_address(remote) == "203.0.113.7"


INGRESS = TrustedProxies.parse(["10.0.0.0/8", "fd00::/8"])


def via(peer: str, xff: str | None) -> dict[str, str]:
    md = {PEER_KEY: peer}
    if xff is not None:
        md[FORWARDED_FOR_KEY] = xff
    return md


def test_behind_a_trusted_proxy_the_client_is_the_right_most_untrusted_hop() -> None:
    # An ingress pod at 10.1.2.3 forwards for 203.0.113.7: each client gets its own bucket.
    assert client_address(via("ipv4:10.1.2.3:5000", "203.0.113.7"), INGRESS) == "203.0.113.7"
    # Whatever the client wrote to the left of what the proxies appended is ignored.
    forged = via("ipv4:10.1.2.3:5000", "1.1.1.1, 203.0.113.7, 10.9.9.9")
    assert client_address(forged, INGRESS) == "203.0.113.7"
    assert client_address(via("ipv6:[fd00::5]:443", "2001:db8::7"), INGRESS) == "2001:db8::7"
    # A REST call through the ingress: the HTTP client is the proxy, the header names the client.
    rest = {**via("ipv4:127.0.0.1:4000", "198.51.100.8"), **dict(forwarded_metadata("10.0.0.9"))}
    assert client_address(rest, INGRESS) == "198.51.100.8"


def test_forwarded_for_is_ignored_unless_the_peer_is_trusted() -> None:
    # Without the setting, or from a peer outside it, a client cannot choose its bucket.
    assert client_address(via("ipv4:203.0.113.7:1", "198.51.100.1")) == "203.0.113.7"
    assert client_address(via("ipv4:203.0.113.7:1", "198.51.100.1"), INGRESS) == "203.0.113.7"
    # Garbage or an empty header behind the proxy: the last address we can vouch for.
    assert client_address(via("ipv4:10.1.2.3:1", "not-an-ip"), INGRESS) == "10.1.2.3"
    assert client_address(via("ipv4:10.1.2.3:1", None), INGRESS) == "10.1.2.3"
    assert client_address(via("ipv4:10.1.2.3:1", "x, 10.4.4.4"), INGRESS) == "10.4.4.4"
    # A header of thousands of hops costs a bounded walk and still names the proxy's client.
    long = ", ".join(["192.0.2.1"] * 5000 + ["203.0.113.9"])
    assert client_address(via("ipv4:10.1.2.3:1", long), INGRESS) == "203.0.113.9"


def test_the_trusted_proxies_setting_is_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HS_GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8")
    assert GatewaySettings().proxies().trusts("10.200.0.1")
    monkeypatch.setenv("HS_GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8,ingress")
    with pytest.raises(ValueError, match="'ingress'"):
        GatewaySettings()
