"""codeb's own recoverability as the API shows it: response shapes."""

from __future__ import annotations

from typing import Literal

from codeb.api.shapes import NULLABLE_TIME, Shape

State = Literal["ok", "warning", "alarm"]


class ReplicaStatus(Shape):
    configured: bool
    state: State
    reason: str
    url: str | None = None
    max_lag_s: int | None = None
    local_txid: int | None = None
    replica_txid: int | None = None
    replica_updated_at: NULLABLE_TIME = None
    transactions_behind: int | None = None
    lag_s: float | None = None
    restarts: int | None = None


class BundleStatus(Shape):
    state: State
    reason: str
    last_exported_at: NULLABLE_TIME
    age_days: float | None = None
    max_age_days: int | None = None
    sha256: str | None = None


class RecoveryStatus(Shape):
    state: State
    replica: ReplicaStatus
    bundle: BundleStatus
