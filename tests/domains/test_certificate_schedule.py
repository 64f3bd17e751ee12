"""When codeb orders a DNS-01 certificate again (pure): none yet, or inside the renewal
window (30 days, or a third of a shorter life), and never while waiting out the pause after
a failed attempt."""

from __future__ import annotations

import datetime as dt

from codeb.features.domains.service import certificate_due
from codeb.store.models import DomainCertificate

NOW = dt.datetime(2026, 11, 30, 12, 0, 0)


def cert(**fields) -> DomainCertificate:
    return DomainCertificate(name="*.shop.example.test", names="[]", **fields)


def test_no_certificate_yet_is_due() -> None:
    assert certificate_due(None, NOW)
    assert certificate_due(cert(), NOW)


def test_ninety_day_certificate_renewed_thirty_days_before_expiry() -> None:
    issued = NOW - dt.timedelta(days=59)
    fresh = cert(fullchain="x", not_before=issued, not_after=issued + dt.timedelta(days=90))
    assert not certificate_due(fresh, NOW)
    assert certificate_due(fresh, NOW + dt.timedelta(days=1, seconds=1))


def test_short_lived_certificate_renewed_at_two_thirds() -> None:
    short = cert(fullchain="x", not_before=NOW, not_after=NOW + dt.timedelta(days=6))
    assert not certificate_due(short, NOW + dt.timedelta(days=3, hours=23))
    assert certificate_due(short, NOW + dt.timedelta(days=4, seconds=1))


def test_a_failed_attempt_waits_for_its_next_attempt() -> None:
    failed = cert(last_error="urn:ietf:params:acme:error:unauthorized", attempts=2,
                  next_attempt_at=NOW + dt.timedelta(minutes=10))  # fmt: skip
    assert not certificate_due(failed, NOW)
    assert certificate_due(failed, NOW + dt.timedelta(minutes=10))
