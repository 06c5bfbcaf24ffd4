"""The failed-authentication throttle: counts failures only, refuses for one window with a
retry time, forgets least-recent subjects first so its memory stays bounded; and the client
address it counts cannot be forged by a caller."""

from __future__ import annotations

import grpc
import pytest

from services.common.grpc.errors import ApiError
from services.gateway.auth import (
    CLIENT_ADDRESS_KEY,
    CLIENT_PROOF_KEY,
    PEER_KEY,
    client_address,
    forwarded_metadata,
)
from services.gateway.ratelimit import AuthThrottle


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
