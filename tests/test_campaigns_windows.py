"""The campaign engine's pure parts: calling windows across time zones and DST, pacing, outcomes and retries."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from parley.campaigns import outcomes, pacing
from parley.campaigns.schedule import CallingWindow, RetryPolicy, RetryRule
from parley.campaigns.windows import is_open, next_opening, open_zones

WEEKDAYS = [CallingWindow()]  # mon-fri 09:00-17:00


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_window_is_the_contacts_local_time() -> None:
    at = utc(2026, 6, 1, 8, 0)  # Monday 08:00 UTC: 17:00 Tokyo (closed), 10:00 Paris (open), 01:00 LA (closed)
    assert not is_open(WEEKDAYS, "Asia/Tokyo", at)
    assert is_open(WEEKDAYS, "Europe/Paris", at)
    assert not is_open(WEEKDAYS, "America/Los_Angeles", at)
    assert open_zones(WEEKDAYS, ["Asia/Tokyo", "Europe/Paris", "America/Los_Angeles"], at) == ["Europe/Paris"]
    assert is_open([], "Asia/Tokyo", at)  # no windows: any time


def test_the_end_is_exclusive_and_days_count() -> None:
    paris_five = utc(2026, 6, 1, 15, 0)  # 17:00 in Paris (CEST)
    assert not is_open(WEEKDAYS, "Europe/Paris", paris_five)
    assert is_open(WEEKDAYS, "Europe/Paris", paris_five - timedelta(seconds=1))
    saturday = utc(2026, 6, 6, 12, 0)
    assert not is_open(WEEKDAYS, "Europe/Paris", saturday)
    assert is_open([CallingWindow(days=["sat"], start=time(10), end=time(12, 30))], "UTC", saturday)


def test_next_opening() -> None:
    friday_evening = utc(2026, 6, 5, 18, 0)  # Friday 20:00 Paris: the next opening is Monday 09:00 Paris
    assert next_opening(WEEKDAYS, "Europe/Paris", friday_evening) == utc(2026, 6, 8, 7, 0)
    inside = utc(2026, 6, 3, 10, 0)
    assert next_opening(WEEKDAYS, "Europe/Paris", inside) == inside
    two = [CallingWindow(start=time(9), end=time(12)), CallingWindow(start=time(14), end=time(17))]
    assert next_opening(two, "UTC", utc(2026, 6, 3, 12, 30)) == utc(2026, 6, 3, 14, 0)
    assert next_opening([CallingWindow(days=[])], "UTC", inside) is None


def test_windows_keep_to_local_time_across_dst() -> None:
    # New York: EST (UTC-5) until 2026-03-08 02:00, then EDT (UTC-4); 09:00 local moves from 14:00 to 13:00 UTC
    assert next_opening(WEEKDAYS, "America/New_York", utc(2026, 3, 6, 23, 0)) == utc(2026, 3, 9, 13, 0)
    assert is_open(WEEKDAYS, "America/New_York", utc(2026, 3, 6, 14, 0))
    assert not is_open(WEEKDAYS, "America/New_York", utc(2026, 3, 9, 12, 59))
    # a window opening inside the spring-forward gap (02:30 does not exist) opens at the gap's end, 03:00 EDT
    night = [CallingWindow(days=["sun"], start=time(2, 30), end=time(4))]
    assert next_opening(night, "America/New_York", utc(2026, 3, 8, 5, 0)) == utc(2026, 3, 8, 7, 0)
    # fall back (2026-11-01 01:00-02:00 happens twice): a window at 01:30 opens at its first occurrence (EDT)
    repeat = [CallingWindow(days=["sun"], start=time(1, 30), end=time(3))]
    assert next_opening(repeat, "America/New_York", utc(2026, 11, 1, 4, 0)) == utc(2026, 11, 1, 5, 30)


def test_pacing_takes_the_smallest_room() -> None:
    limits = pacing.Limits(max_concurrent=5, max_calls_per_minute=60, tenant_max_concurrent=8)

    def load(campaign: int = 0, tenant: int = 0, free: int = 100, **started: int) -> pacing.Load:
        windows = {"minute": 60.0, "ten": 10.0, "second": 1.0}
        return pacing.Load(campaign, tenant, free, {windows[k]: v for k, v in started.items()})

    assert pacing.room(pacing.Load(0, 0, 100), pacing.Limits(5, 600, 8)) == 5
    assert pacing.room(load(), limits) == 1  # 60 a minute: one a second
    assert pacing.room(load(2, 7), pacing.Limits(5, 600, 8)) == 1  # the tenant's limit binds
    assert pacing.room(load(second=1), limits) == 0
    assert pacing.room(load(ten=10), limits) == 0  # 10 in the last 10 s: spread out
    assert pacing.room(load(minute=60), limits) == 0  # the minute's rate
    assert pacing.room(load(free=0), limits) == 0  # this worker's free capacity
    assert pacing.window_limit(1, 10) == 1 and pacing.window_limit(600, 10) == 100 and pacing.window_limit(600, 1) == 10
    assert pacing.worker_free(10, 6, 3, draining=False) == 1
    assert pacing.worker_free(10, 0, 0, draining=True) == 0
    assert pacing.worker_free(0, 50, 50, draining=False) > 0  # no cap


@pytest.mark.parametrize(
    ("status", "reason", "duration", "detection", "expected"),
    [
        ("failed", "busy", 0.0, None, "busy"),  # Twilio, Exotel
        ("failed", "sip-486 Busy Here", 0.0, None, "busy"),
        ("failed", "sip-603 Decline", 0.0, None, "busy"),
        ("failed", "no-answer", 0.0, None, "no_answer"),  # Twilio, the SIP endpoint
        ("failed", "not-answered", 0.0, None, "no_answer"),  # 'completed' while dialing
        ("failed", "unanswered", 0.0, None, "no_answer"),  # Vonage
        ("failed", "canceled", 0.0, None, "no_answer"),
        ("failed", "sip-480 Temporarily Unavailable", 0.0, None, "no_answer"),
        ("failed", "dial-failed: the carrier said no", 0.0, None, "failed"),
        ("failed", "sip-503 Service Unavailable", 0.0, None, "failed"),
        ("ended", "caller-hangup", 42.0, None, "answered"),
        ("ended", "caller-hangup", 2.0, None, "hung_up_early"),
        ("ended", "agent-hangup", 30.0, {"answered_by": "machine_end_beep"}, "voicemail"),  # Twilio AMD
        ("ended", "agent-hangup", 30.0, {"status": "machine"}, "voicemail"),  # Vonage
        ("ended", "agent-hangup", 30.0, {"machine": True}, "voicemail"),  # Plivo
        ("ended", "agent-hangup", 30.0, {"answered_by": "human"}, "answered"),
        (
            "ended",
            "agent-hangup",
            30.0,
            {"type": "machine_detection", "carrier": "twilio", "answered_by": "machine", "detail": "machine_end_beep"},
            "voicemail",
        ),  # parley.telephony.amd
        ("ended", "agent-hangup", 30.0, {"type": "machine_detection", "answered_by": "unknown"}, "answered"),
        ("ended", "worker-crashed", 0.5, None, "failed"),  # closed for a lost worker, never heard
        ("dialing", None, None, None, None),
        ("active", None, None, None, None),
    ],
)
def test_call_outcomes(
    status: str, reason: str | None, duration: float | None, detection: dict[str, object] | None, expected: str | None
) -> None:
    assert outcomes.call_outcome(status, reason, duration, 5.0, detection) == expected


def test_retries_follow_the_rule_of_each_outcome() -> None:
    policy = RetryPolicy(busy=RetryRule(count=2, spacing_s=600), no_answer=RetryRule(count=1, spacing_s=3600))
    now = utc(2026, 6, 1, 10)
    assert outcomes.decide(policy, "busy", [], now) == outcomes.Decision("pending", now + timedelta(seconds=600))
    assert outcomes.decide(policy, "busy", ["busy"], now).state == "pending"
    assert outcomes.decide(policy, "busy", ["busy", "busy"], now) == outcomes.Decision("failed")
    assert outcomes.decide(policy, "no_answer", ["busy", "busy"], now).state == "pending"  # its own count
    assert outcomes.decide(policy, "no_answer", ["no_answer"], now).state == "failed"
    assert outcomes.decide(policy, "answered", [], now) == outcomes.Decision("done")
    assert outcomes.decide(policy, "voicemail", [], now) == outcomes.Decision("done")  # count 0 by default
    assert outcomes.decide(policy, "hung_up_early", [], now) == outcomes.Decision("done")
    assert outcomes.decide(policy, "dnc", [], now) == outcomes.Decision("dnc")
    assert outcomes.decide(policy, "dial_lost", [], now).state == "pending"  # once, 60 s later
    assert outcomes.decide(policy, "dial_lost", ["dial_lost"], now).state == "failed"


def test_a_rate_bound_campaign_is_not_claimed_for_until_its_window_frees() -> None:
    limits = pacing.Limits(max_concurrent=50, max_calls_per_minute=60, tenant_max_concurrent=50)
    t = utc(2026, 6, 1, 10)
    ago = lambda s: t - timedelta(seconds=s)  # noqa: E731
    ten_full = pacing.Load(0, 0, 100, {60.0: 10, 10.0: 10, 1.0: 0}, {60.0: ago(30), 10.0: ago(4)})
    assert pacing.rate_reopens(ten_full, limits) == t + timedelta(seconds=6)
    minute_full = pacing.Load(0, 0, 100, {60.0: 60, 10.0: 3, 1.0: 1}, {60.0: ago(50), 10.0: ago(2), 1.0: ago(0.5)})
    assert pacing.rate_reopens(minute_full, limits) == t + timedelta(seconds=10)
    assert pacing.rate_reopens(pacing.Load(5, 5, 100, {60.0: 1}, {60.0: t}), limits) is None  # not the rate
