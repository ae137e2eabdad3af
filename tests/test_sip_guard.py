"""The per-source INVITE guard (issue 8, finding 9): token bucket, unacknowledged cap, bounded memory."""

from __future__ import annotations

from parley.sip.agent.guard import MAX_SOURCES, InviteGuard


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_with_retry_after() -> None:
    clock = Clock()
    guard = InviteGuard(rate_per_s=2.0, burst=3, max_unacked=0, unacked_retry_s=10, clock=clock)
    assert [guard.admit("10.0.0.1") for _ in range(3)] == [None, None, None]
    refusal = guard.admit("10.0.0.1")
    assert refusal is not None and (refusal.status, refusal.retry_after) == (503, 1)
    assert guard.admit("10.0.0.2") is None  # another source has its own bucket
    clock.now += 0.5  # one token back at 2 a second
    assert guard.admit("10.0.0.1") is None
    assert guard.admit("10.0.0.1") is not None


def test_the_unacked_cap_is_486_until_released() -> None:
    guard = InviteGuard(rate_per_s=0, burst=1, max_unacked=2, unacked_retry_s=9.5)
    assert guard.admit("a") is None and guard.admit("a") is None
    refusal = guard.admit("a")
    assert refusal is not None and (refusal.status, refusal.reason, refusal.retry_after) == (486, "Busy Here", 10)
    guard.release("a")
    assert guard.admit("a") is None
    guard.release("a")
    guard.release("a")
    assert guard.unacked == {}  # nothing kept for a source with nothing pending


def test_refused_invites_cost_no_unacked_slot_and_memory_stays_bounded() -> None:
    clock = Clock()
    guard = InviteGuard(rate_per_s=1.0, burst=1, max_unacked=5, unacked_retry_s=10, clock=clock)
    assert guard.admit("a") is None
    assert guard.admit("a") is not None  # over the rate
    assert guard.unacked == {"a": 1}
    for i in range(MAX_SOURCES + 50):
        guard.admit(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(guard._buckets) <= MAX_SOURCES
