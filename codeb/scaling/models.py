"""The state of autoscaling (migration 0012): its settings (one row: the policy, where and
what to create, the Vultr API key encrypted with the Fernet key), the app pool's load
samples the policy reads, and the history of every decision and action."""

from __future__ import annotations

from peewee import AutoField, CharField, DateTimeField, FloatField, TextField

from codeb.store.fields import JSONField
from codeb.store.models import BaseModel, utcnow


class ScalingSettings(BaseModel):
    id = AutoField()
    policy = JSONField()  # codeb.scaling.policy.Policy's fields
    cloud = JSONField()  # codeb.scaling.settings.CloudSettings' fields (no secret)
    # Encrypted (Fernet, CODEB_SECRET_KEY_FILE); never answered, logged or put in an error.
    api_key = TextField(null=True)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "scaling_settings"


class ScalingSample(BaseModel):
    id = AutoField()
    at = DateTimeField(index=True)
    cpu_pct = FloatField()
    mem_pct = FloatField()
    servers = JSONField()  # per app server: {"cpu_pct", "mem_pct"}

    class Meta:
        table_name = "scaling_samples"


class ScalingEvent(BaseModel):
    """One decision or action: a check (its decision and inputs), a scale up or down (each
    step with its duration, where it failed, the instance, what it costs), an orphan found."""

    id = AutoField()
    kind = CharField(max_length=10)  # check, up, down, orphan
    trigger = CharField(max_length=10)  # api, scheduled, startup
    requested_by = CharField(max_length=100, null=True)
    status = CharField(max_length=24)
    decision = JSONField(null=True)
    steps = JSONField(null=True)  # [{"step", "status", "seconds", "detail"?}]
    failed_step = CharField(max_length=30, null=True)
    error = TextField(null=True)
    label = CharField(max_length=64, null=True, index=True)
    instance_id = CharField(max_length=100, null=True, index=True)
    server_name = CharField(max_length=63, null=True)
    operation_id = CharField(max_length=40, null=True)
    monthly_cost = FloatField(null=True)
    started_at = DateTimeField(default=utcnow)
    finished_at = DateTimeField(null=True)

    class Meta:
        table_name = "scaling_events"
