"""The autoscaling policy, a pure decision, with an injected clock: thresholds, sustained
windows, cooldowns, min/max, the cost cap, and load that flaps."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from codeb.features.scaling.policy import Decision, Policy, Pool, Sample, decide

NOW = dt.datetime(2026, 11, 30, 12, 0, 0)
ON = Policy(enabled=True, min_servers=1, max_servers=3, monthly_cost_cap=30,
            server_monthly_cost=10)  # fmt: skip
POOL = Pool(servers=2, autoscaled=1, monthly_cost=10)


def load(seconds: int, cpu: float, mem: float = 10.0, every: int = 30) -> list[Sample]:
    """Samples every `every` s over the last `seconds` up to NOW."""
    return [Sample(NOW - dt.timedelta(seconds=t), cpu, mem) for t in range(0, seconds + 1, every)]


def test_disabled_or_blind_never_acts():
    assert decide(Policy(), load(600, 99), POOL, NOW).action == "none"
    blind = decide(ON, [], POOL, NOW)
    assert blind.action == "none" and "no stats" in blind.reasons[0]


def test_out_after_three_sustained_minutes_of_cpu_or_memory():
    assert decide(ON, load(180, 90), POOL, NOW).action == "up"
    assert decide(ON, load(180, 10, mem=80), POOL, NOW).action == "up"
    # Two minutes is not three: the window is not covered yet.
    assert decide(ON, load(120, 90), POOL, NOW).action == "none"
    # One sample under the threshold in the window resets it.
    dip = [s if s.at != NOW - dt.timedelta(seconds=60) else Sample(s.at, 50, 10)
           for s in load(180, 90)]  # fmt: skip
    assert decide(ON, dip, POOL, NOW).action == "none"


def test_a_gap_in_the_stats_is_not_sustained_load():
    holey = [s for s in load(180, 90) if not 30 <= (NOW - s.at).total_seconds() <= 150]
    assert decide(ON, holey, POOL, NOW).action == "none"


def test_in_after_fifteen_quiet_minutes_only_for_autoscaled_servers():
    quiet = load(900, 10)
    decision = decide(ON, quiet, POOL, NOW)
    assert decision.action == "down", decision
    assert decide(ON, load(600, 10), POOL, NOW).action == "none"
    none_of_ours = decide(ON, quiet, Pool(servers=2, autoscaled=0, monthly_cost=0), NOW)
    assert none_of_ours.action == "none" and "autoscaling" in none_of_ours.reasons[-1]


def test_flapping_load_does_not_flap_servers():
    flapping = [
        Sample(NOW - dt.timedelta(seconds=t), 90 if (t // 60) % 2 else 10, 10)
        for t in range(0, 901, 30)
    ]
    assert decide(ON, flapping, POOL, NOW).action == "none"


@pytest.mark.parametrize(
    ("pool", "reason"),
    [
        (Pool(3, 2, 20), "maximum of 3"),
        (Pool(2, 1, 25), "over the cap of 30"),
    ],
)
def test_limits_and_the_cost_cap_stop_a_scale_out(pool, reason):
    decision = decide(ON, load(180, 95), pool, NOW)
    assert decision.action == "none" and reason in decision.reasons[-1], decision


def test_the_minimum_stops_a_scale_in():
    decision = decide(ON, load(900, 5), Pool(1, 1, 10), NOW)
    assert decision.action == "none" and "minimum of 1" in decision.reasons[-1]


@pytest.mark.parametrize(
    ("pool", "minutes", "action"),
    [
        (Pool(2, 1, 10, last_added_at=NOW - dt.timedelta(minutes=9)), 9, "none"),
        (Pool(2, 1, 10, last_added_at=NOW - dt.timedelta(minutes=11)), 11, "up"),
        (Pool(2, 1, 10, last_removed_at=NOW - dt.timedelta(minutes=4)), 4, "none"),
        (Pool(2, 1, 10, last_removed_at=NOW - dt.timedelta(minutes=6)), 6, "up"),
    ],
)
def test_cooldowns_after_adding_and_removing(pool, minutes, action):
    decision = decide(ON, load(180, 95), pool, NOW)
    assert decision.action == action, (minutes, decision)


def test_a_decision_carries_its_inputs():
    decision = decide(ON, load(180, 95), POOL, NOW)
    assert isinstance(decision, Decision)
    view = decision.view()
    assert view["inputs"]["servers"] == 2 and view["inputs"]["latest"]["cpu_pct"] == 95


def test_a_policy_that_contradicts_itself_is_refused():
    with pytest.raises(ValueError):
        Policy(in_cpu_pct=80, out_cpu_pct=75)
    with pytest.raises(ValueError):
        Policy(min_servers=4, max_servers=2)


def _simulate(cpu_at, minutes: int, policy: Policy = ON) -> list[tuple[int, str]]:
    """The policy checked every 30 s for `minutes`, the pool following its decisions (an
    action takes effect at once); answers (second, action) of every action."""
    start = NOW - dt.timedelta(minutes=minutes)
    samples: list[Sample] = []
    servers, autoscaled = 2, 1
    added = removed = None
    acted = []
    for step in range(minutes * 2 + 1):
        now = start + dt.timedelta(seconds=30 * step)
        samples.append(Sample(now, cpu_at(30 * step), 10))
        pool = Pool(servers, autoscaled, autoscaled * 10.0, added, removed)
        action = decide(policy, samples[-40:], pool, now).action
        if action == "up":
            servers, autoscaled, added = servers + 1, autoscaled + 1, now
        elif action == "down":
            servers, autoscaled, removed = servers - 1, autoscaled - 1, now
        if action != "none":
            acted.append((30 * step, action))
    return acted


@pytest.mark.parametrize("period_s", [60, 120, 240, 300])
def test_flapping_load_over_hours_never_adds_or_removes(period_s):
    """Load swinging between 95 % and 5 % faster than the windows, checked every 30 s for
    three hours: not one server is added or removed."""

    def cpu(t: int) -> float:
        return 95.0 if (t // (period_s // 2)) % 2 else 5.0

    assert _simulate(cpu, 180) == []


def test_sustained_load_adds_one_server_per_cooldown_not_one_per_check():
    """Hot for 30 minutes: one server after 3 minutes, the next only once the 10-minute
    cooldown is over, never one per 30-s check; then quiet for an hour:
    servers leave one at a time, each after 15 quiet minutes."""

    def cpu(t: int) -> float:
        return 95.0 if t < 30 * 60 else 5.0

    policy = Policy(enabled=True, min_servers=1, max_servers=6, monthly_cost_cap=100,
                    server_monthly_cost=10)  # fmt: skip
    acted = _simulate(cpu, 120, policy)
    ups = [t for t, a in acted if a == "up"]
    downs = [t for t, a in acted if a == "down"]
    assert ups[0] == 180, acted
    assert all(b - a >= 600 for a, b in itertools.pairwise(ups)), acted
    assert len(ups) == 3, acted  # at 3, 13 and 23 minutes
    assert downs and downs[0] >= 30 * 60 + 900, acted
    assert all(b - a >= 300 for a, b in itertools.pairwise(downs)), acted
