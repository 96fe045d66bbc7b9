"""douane.connections: per-address caps and request read bounds, on a test clock."""

from __future__ import annotations

from douane.connections import ConnectionBounds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bounds(clock: Clock, per_address: int = 2) -> ConnectionBounds:
    return ConnectionBounds(per_address, idle_timeout=60, body_timeout=30, clock=clock)


def test_an_address_may_hold_only_so_many_connections() -> None:
    b = bounds(Clock())
    assert b.opened("c1", "10.0.0.1") and b.opened("c2", "10.0.0.1")
    assert not b.opened("c3", "10.0.0.1"), "a third from the same address is refused"
    assert b.opened("c4", "10.0.0.2"), "other addresses are not affected"
    b.closed("c1")
    assert b.opened("c5", "10.0.0.1"), "a closed connection frees its place"


def test_a_connection_that_never_sends_a_request_expires() -> None:
    clock = Clock()
    b = bounds(clock)
    b.opened("idle", "a")
    clock.now += 60
    assert b.expired() == []
    clock.now += 1
    [gone] = b.expired()
    assert gone.connection == "idle" and "limits.idle_timeout_s" in gone.why and b.open == 0


def test_a_request_body_sent_too_slowly_expires_with_its_flow() -> None:
    clock = Clock()
    b = bounds(clock)
    b.opened("slow", "a")
    clock.now += 50
    b.head("slow", "f1")  # the head came in time; the body trickles
    clock.now += 31
    [gone] = b.expired()
    assert gone.flows == ("f1",) and "limits.request_body_timeout_s" in gone.why


def test_a_call_waiting_on_the_provider_is_never_timed_out_here() -> None:
    clock = Clock()
    b = bounds(clock)
    b.opened("busy", "a")
    b.head("busy", "f1")
    b.body("busy", "f1")
    clock.now += 10_000  # a long generation
    assert b.expired() == []
    b.done("busy", "f1")
    clock.now += 59
    assert b.expired() == [], "the idle wait starts again when the answer is done"
    clock.now += 2
    assert [g.connection for g in b.expired()] == ["busy"]


def test_a_tunnel_to_a_host_douane_does_not_intercept_is_not_bounded_unless_requests_appear() -> None:
    clock = Clock()
    b = bounds(clock)
    b.opened("t", "a")
    b.tunnel("t")
    clock.now += 10_000
    assert b.expired() == []
    b.head("t", "f")  # intercepted after all (the TLS name was a provider's): bounded again
    clock.now += 31
    assert [g.flows for g in b.expired()] == [("f",)]
