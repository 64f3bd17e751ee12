"""The state of codeb: the original design's tables plus the registry of servers, API keys,
operations and their runner events. Schema changes go through `migrations/`."""

from __future__ import annotations

import datetime as dt

from peewee import (
    AutoField,
    BooleanField,
    CharField,
    DatabaseProxy,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from codeb.store.fields import JSONField

database = DatabaseProxy()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Project(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    name = CharField(unique=True, max_length=63)
    type = CharField(max_length=20)  # nextjs, remix, nodejs, static
    git_repo = TextField(null=True)
    # Encrypted (Fernet) password of the developer's local database, for .env.local.
    local_db_password = TextField()
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    status = CharField(max_length=20, default="active")  # active, archived, deleted

    class Meta:
        table_name = "projects"
        # The listing's order and filter (migration 0015).
        indexes = ((("created_at", "name", "status"), False),)


class Environment(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    project = ForeignKeyField(Project, backref="environments", column_name="project_id")
    name = CharField(max_length=20)  # staging, production, preview
    app_port = IntegerField(null=True)
    db_port = IntegerField(null=True)
    redis_port = IntegerField(null=True)
    redis_db = IntegerField(null=True)
    domain = CharField(null=True, max_length=253)
    # Encrypted (Fernet); never returned except in the creation answer's .env files.
    db_password = TextField()
    redis_password = TextField()
    status = CharField(max_length=20, default="active")  # active, deleted
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "environments"
        indexes = ((("project", "name"), True),)


class Server(BaseModel):
    id = AutoField()
    name = CharField(unique=True, max_length=63)
    ip = CharField(unique=True, max_length=45)
    role = CharField(max_length=20)  # control, app, db, cache, storage
    ssh_user = CharField(max_length=32, default="root")
    ssh_port = IntegerField(default=22)
    provider = CharField(max_length=40, default="manual")
    provider_id = CharField(null=True, max_length=100)
    status = CharField(max_length=20, default="registered")
    facts = JSONField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "servers"


class Container(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    project = ForeignKeyField(Project, backref="containers", column_name="project_id")
    environment = CharField(max_length=20)
    server_type = CharField(max_length=20)  # app, db, redis
    server_ip = CharField(max_length=45)
    container_name = CharField(max_length=200)
    image = TextField()
    port_external = IntegerField(null=True)
    port_internal = IntegerField(null=True)
    status = CharField(max_length=20, default="created")  # created, running, stopped, removed
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    # The latest health check (healthy, unhealthy, starting); read by the Protection Layer.
    health_status = CharField(null=True, max_length=20)
    health_checked_at = DateTimeField(null=True)
    # Added by migration 0004: what exactly runs (podman's image id), what ran before (for
    # rollback), the data volume (never removed with the container), the last run.
    image_id = CharField(null=True, max_length=80)
    previous_image = TextField(null=True)
    volume = CharField(null=True, max_length=200)
    last_operation_id = CharField(null=True, max_length=40)

    class Meta:
        table_name = "containers"


class Placement(BaseModel):
    """Where a component of an environment runs (codeb/services/fleet.py). `db` and `redis` are
    placed on one server each (their volume lives there), `app` on one or more (replicas, one
    container per server). Added by migration 0009."""

    id = AutoField()
    environment = ForeignKeyField(Environment, backref="placements", column_name="environment_id")
    component = CharField(max_length=10)  # app, db, redis
    server = ForeignKeyField(Server, backref="placements", column_name="server_id")
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "placements"
        indexes = ((("environment", "component", "server"), True),)


class Backup(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    project = ForeignKeyField(Project, backref="backups", column_name="project_id")
    environment = CharField(max_length=20)
    type = CharField(max_length=20)  # full, incremental, wal
    size_bytes = IntegerField(null=True)
    location = TextField()
    created_at = DateTimeField(default=utcnow)
    verified_at = DateTimeField(null=True)
    status = CharField(max_length=20, default="completed")
    # Backups (issue 10, migration 0007): a base backup of one db component on the storage
    # server (codeb/features/backups/service.py); status running, completed, failed or deleted.
    component = CharField(max_length=20, default="db")
    target_id = CharField(null=True, max_length=40)  # backup_targets.id
    kind = CharField(null=True, max_length=20)  # manual, scheduled, safety, found
    barman_id = CharField(null=True, max_length=40)
    operation_id = CharField(null=True, max_length=40)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)
    begin_wal = CharField(null=True, max_length=40)
    end_wal = CharField(null=True, max_length=40)
    begin_time = DateTimeField(null=True)
    end_time = DateTimeField(null=True)  # the earliest time it restores to
    error = TextField(null=True)
    deleted_at = DateTimeField(null=True)
    # Added by migration 0010: the row codeb wrote into the db's codeb_canary table just
    # before this base backup (a restore of the backup must find it: issue 11's drills).
    canary = CharField(null=True, max_length=100)
    canary_at = DateTimeField(null=True)

    class Meta:
        table_name = "backups"


class ApiKey(BaseModel):
    id = AutoField()
    name = CharField(unique=True, max_length=64)
    role = CharField(max_length=20)  # admin, operator, readonly
    # SHA-256 of the whole key; the key itself is shown once and never stored.
    key_hash = CharField(unique=True, max_length=64)
    prefix = CharField(max_length=16)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)
    last_used_at = DateTimeField(null=True)
    # Added by migration 0005. The person or service the key belongs to: approvals need
    # another principal. `created_by` is the creating key's name (None: made on the server).
    principal = CharField(null=True, max_length=64)
    created_by = CharField(null=True, max_length=64)

    class Meta:
        table_name = "api_keys"


class OperationLog(BaseModel):
    id = AutoField()
    project = ForeignKeyField(
        Project, null=True, backref="operation_logs", column_name="project_id"
    )
    operation = CharField(max_length=64)
    danger_level = IntegerField()
    requested_by = CharField(max_length=10)  # mcp, cli, api
    key_name = CharField(null=True, max_length=64)
    target = CharField(null=True, max_length=200)
    status = CharField(max_length=20)
    details = JSONField(null=True)
    created_at = DateTimeField(default=utcnow)
    executed_at = DateTimeField(null=True)
    # Hash chain: each row's hash covers its content and the previous row's hash.
    prev_hash = CharField(null=True, max_length=64)
    entry_hash = CharField(null=True, max_length=64)

    class Meta:
        table_name = "operation_logs"


class PortAllocation(BaseModel):
    # The primary key is the guard against two projects holding one port.
    port = IntegerField(primary_key=True)
    server_type = CharField(max_length=10)  # app, db, redis
    environment = CharField(max_length=20)
    project = ForeignKeyField(
        Project, null=True, backref="port_allocations", column_name="project_id"
    )
    allocated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "port_allocations"


class ProtectionQueue(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    operation = CharField(max_length=64)
    danger_level = IntegerField()
    project = ForeignKeyField(
        Project, null=True, backref="protection_entries", column_name="project_id"
    )
    details = JSONField()
    # Hash of the confirm token; the token itself is shown once.
    confirm_token = CharField(null=True, unique=True, max_length=64)
    expires_at = DateTimeField()
    # pending, executed, cancelled, expired, failed
    status = CharField(max_length=20, default="pending")
    created_at = DateTimeField(default=utcnow)
    # What the token is bound to: the target, and a hash of operation + target + parameters.
    target_kind = CharField(null=True, max_length=40)
    target_ref = CharField(null=True, max_length=200)
    target_name = CharField(null=True, max_length=200)
    binding_hash = CharField(null=True, max_length=64)
    # The requesting key (only it may confirm) and the client it said it was.
    key_id = IntegerField(null=True)
    key_name = CharField(null=True, max_length=64)
    requested_by = CharField(null=True, max_length=10)
    # Counted from the request; the final confirm must come after it.
    cooldown_ends_at = DateTimeField(null=True)
    confirmations = IntegerField(default=0)
    last_confirmed_at = DateTimeField(null=True)
    approved_key_id = IntegerField(null=True)
    approved_by = CharField(null=True, max_length=64)
    approved_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)
    # Added by migration 0005: the requester's principal and role, the principals that
    # confirmed (a JSON list), and the approver's principal.
    principal = CharField(null=True, max_length=64)
    key_role = CharField(null=True, max_length=20)
    confirmed_by = JSONField(null=True)
    approved_principal = CharField(null=True, max_length=64)

    class Meta:
        table_name = "protection_queue"


class Operation(BaseModel):
    """A long-running piece of work (a playbook run) that clients follow by id."""

    id = CharField(primary_key=True, max_length=40)
    kind = CharField(max_length=64)
    status = CharField(max_length=20, default="queued")
    project = ForeignKeyField(Project, null=True, backref="operations", column_name="project_id")
    server = ForeignKeyField(Server, null=True, backref="operations", column_name="server_id")
    requested_by = CharField(max_length=10)
    key_name = CharField(null=True, max_length=64)
    params = JSONField(null=True)
    result = JSONField(null=True)
    rc = IntegerField(null=True)
    created_at = DateTimeField(default=utcnow)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)
    # Added by migration 0003 (appended, nullable: ALTER TABLE gives the same schema).
    error = TextField(null=True)
    cancel_requested_at = DateTimeField(null=True)
    # Registry names of the servers the run touches: the lock set.
    targets = JSONField(null=True)

    class Meta:
        table_name = "operations"


class OperationEvent(BaseModel):
    id = AutoField()
    operation = ForeignKeyField(Operation, backref="events", column_name="operation_id")
    seq = IntegerField()
    event = CharField(max_length=64)
    host = CharField(null=True, max_length=100)
    task = TextField(null=True)
    changed = BooleanField(default=False)
    failed = BooleanField(default=False)
    duration = FloatField(null=True)
    data = JSONField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "operation_events"
        indexes = ((("operation", "seq"), True),)


class Lock(BaseModel):
    """A lease on a server (or project): runs that touch the same one are serialised, across
    threads and processes. Expired leases may be taken over; start-up clears them all."""

    resource = CharField(primary_key=True, max_length=120)
    operation_id = CharField(max_length=40)
    acquired_at = DateTimeField()
    expires_at = DateTimeField()

    class Meta:
        table_name = "locks"


class Schedule(BaseModel):
    """A periodic job's state and lease (codeb/services/scheduler.py). A process runs a job
    only after claiming it with a conditional UPDATE (due, and no live lease), so two codeb
    processes never run one job at once; a crashed holder's lease expires."""

    name = CharField(primary_key=True, max_length=64)
    next_run_at = DateTimeField()
    last_started_at = DateTimeField(null=True)
    last_finished_at = DateTimeField(null=True)
    last_status = CharField(null=True, max_length=20)  # succeeded, failed
    last_result = JSONField(null=True)  # what the job returned; never secrets
    last_error = TextField(null=True)
    lease_owner = CharField(null=True, max_length=120)
    lease_expires_at = DateTimeField(null=True)

    class Meta:
        table_name = "schedules"


class DnsZone(BaseModel):
    """A zone codeb holds on every dns server (created with its first domain, SOA and NS set
    by codeb). `name` has no trailing dot."""

    id = AutoField()
    name = CharField(unique=True, max_length=253)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "dns_zones"


class Domain(BaseModel):
    """A name served by the proxies for one environment; the proxies' whole configuration
    and the zones' records are rendered from these rows (codeb/features/domains/service.py)."""

    id = CharField(primary_key=True, max_length=40)
    name = CharField(unique=True, max_length=253)  # punycode, lower case, no trailing dot
    zone = ForeignKeyField(DnsZone, backref="domains", column_name="zone_id")
    project = ForeignKeyField(Project, backref="domains", column_name="project_id")
    environment = CharField(max_length=20)
    status = CharField(max_length=20, default="pending")  # pending, active, failed, deleting
    last_error = TextField(null=True)
    last_operation_id = CharField(null=True, max_length=40)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    applied_at = DateTimeField(null=True)
    # The certificate the proxies last served for it (the periodic check).
    cert_issuer = CharField(null=True, max_length=200)
    cert_not_after = DateTimeField(null=True)
    cert_checked_at = DateTimeField(null=True)
    cert_error = TextField(null=True)

    class Meta:
        table_name = "domains"


class DomainServer(BaseModel):
    """codeb's state of a proxy or dns server: PowerDNS's API key (encrypted with the
    SecretBox) and where its API listens; the Caddyfile last applied to a proxy."""

    server = ForeignKeyField(Server, primary_key=True, column_name="server_id")
    kind = CharField(max_length=10)  # proxy, dns
    api_key = TextField(null=True)
    api_port = IntegerField(null=True)
    dns_port = IntegerField(default=53)
    configured_hash = CharField(null=True, max_length=64)
    applied_config = TextField(null=True)
    applied_hash = CharField(null=True, max_length=64)
    applied_at = DateTimeField(null=True)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "domain_servers"


class AcmeAccount(BaseModel):
    """codeb's ACME account at one directory (its key encrypted with the SecretBox)."""

    directory = CharField(primary_key=True, max_length=500)
    account_key = TextField()
    uri = CharField(null=True, max_length=500)
    email = CharField(null=True, max_length=254)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "acme_accounts"


class DomainCertificate(BaseModel):
    """A certificate codeb obtained itself (ACME DNS-01, for a wildcard domain; `name` is the
    domain's): the chain, its key (encrypted), the last issuance error and when, and when
    to try again (migration 0013)."""

    name = CharField(primary_key=True, max_length=253)
    names = TextField()  # JSON list of the names ordered
    fullchain = TextField(null=True)
    private_key = TextField(null=True)
    issuer = CharField(null=True, max_length=300)
    serial = CharField(null=True, max_length=80)
    not_before = DateTimeField(null=True)
    not_after = DateTimeField(null=True)
    issued_at = DateTimeField(null=True)
    attempts = IntegerField(default=0)
    last_error = TextField(null=True)
    last_error_at = DateTimeField(null=True)
    next_attempt_at = DateTimeField(null=True)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "domain_certificates"


class BackupTarget(BaseModel):
    """A db component whose WAL streams to a storage server and which gets base backups there
    (codeb/features/backups/service.py, migration 0007). `name` is the Barman server (the
    component's container name); the replication password is stored encrypted."""

    id = CharField(primary_key=True, max_length=40)
    project = ForeignKeyField(Project, backref="backup_targets", column_name="project_id")
    environment = CharField(max_length=20)
    component = CharField(max_length=20, default="db")
    name = CharField(unique=True, max_length=120)
    storage_server = CharField(max_length=63)
    db_server = CharField(max_length=63)
    db_port = IntegerField()
    replication_password = TextField()
    schedule = CharField(max_length=64, default="daily")
    status = CharField(max_length=20, default="pending")  # pending, enabled, failed
    enabled_at = DateTimeField(null=True)
    synced_at = DateTimeField(null=True)
    wal_first = CharField(null=True, max_length=40)
    wal_last = CharField(null=True, max_length=40)
    wal_last_at = DateTimeField(null=True)
    last_error = TextField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "backup_targets"


class BackupRestore(BaseModel):
    """A backup restored (to a time) into a new PostgreSQL container on the storage server."""

    id = CharField(primary_key=True, max_length=40)
    backup = ForeignKeyField(Backup, backref="restores", column_name="backup_id")
    project = ForeignKeyField(Project, backref="backup_restores", column_name="project_id")
    environment = CharField(max_length=20)
    container_name = CharField(unique=True, max_length=200)
    server = CharField(max_length=63)
    port = IntegerField()
    volume = CharField(max_length=200)
    target_time = DateTimeField(null=True)
    status = CharField(max_length=20, default="restoring")  # restoring, running, failed
    operation_id = CharField(null=True, max_length=40)
    error = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    # Added by migration 0010: new (a new container) or in_place (the live data replaced; the
    # row then is the scratch copy the live db was rebuilt from), the safety backup taken
    # before, the backup that proved the chain after, the containers row of a new container.
    mode = CharField(max_length=20, default="new")
    safety_backup_id = CharField(null=True, max_length=40)
    after_backup_id = CharField(null=True, max_length=40)
    container_id = CharField(null=True, max_length=40)

    class Meta:
        table_name = "backup_restores"


class BackupDrill(BaseModel):
    """A restore drill (issue 11, migration 0011): a backup (a db base backup or a Redis
    copy) restored into a scratch container on the storage server and checked; only a passed
    drill sets the backup's verified_at (codeb/features/backups/drills.py)."""

    id = CharField(primary_key=True, max_length=40)
    project = ForeignKeyField(Project, backref="backup_drills", column_name="project_id")
    environment = CharField(max_length=20)
    component = CharField(max_length=20, default="db")  # db, cache
    backup_id = CharField(max_length=40, index=True)  # backups.id or redis_copies.id
    kind = CharField(max_length=20, default="manual")  # manual, scheduled
    status = CharField(max_length=20, default="running")  # running, passed, failed
    server = CharField(null=True, max_length=63)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)
    duration_s = FloatField(null=True)
    reason = TextField(null=True)
    checks = JSONField(null=True)  # each check's outcome
    canary_expected = CharField(null=True, max_length=100)
    canary_found = CharField(null=True, max_length=100)
    tables_count = IntegerField(null=True)
    rows_count = IntegerField(null=True)
    operation_id = CharField(null=True, max_length=40)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "backup_drills"


class WalCheck(BaseModel):
    """The live state of one backup target's WAL shipping, as last checked on its storage
    server (issue 11, migration 0011): whether the receiver runs, its lag, failures."""

    target_id = CharField(primary_key=True, max_length=40)
    checked_at = DateTimeField()
    receiver = CharField(max_length=20)  # streaming, stopped, failed, unknown
    detail = TextField(null=True)
    last_wal_at = DateTimeField(null=True)
    lag_bytes = IntegerField(null=True)
    failures = IntegerField(default=0)
    stopped_since = DateTimeField(null=True)

    class Meta:
        table_name = "wal_checks"


class RedisCopy(BaseModel):
    """A copy of a cache component's data on the storage server (issue 11, migration 0011):
    the RDB of a completed BGSAVE, or the whole appendonlydir/."""

    id = CharField(primary_key=True, max_length=40)
    project = ForeignKeyField(Project, backref="redis_copies", column_name="project_id")
    environment = CharField(max_length=20)
    component = CharField(max_length=20, default="cache")
    source = CharField(max_length=200)  # the cache container's name
    source_server = CharField(max_length=63)
    storage_server = CharField(max_length=63)
    kind = CharField(max_length=20, default="manual")  # manual, scheduled
    format = CharField(null=True, max_length=20)  # rdb, aof
    status = CharField(max_length=20, default="running")  # running, completed, failed, deleted
    path = TextField(null=True)
    size_bytes = IntegerField(null=True)
    keys = IntegerField(null=True)
    canary = CharField(null=True, max_length=100)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)
    verified_at = DateTimeField(null=True)
    error = TextField(null=True)
    operation_id = CharField(null=True, max_length=40)
    created_at = DateTimeField(default=utcnow)
    deleted_at = DateTimeField(null=True)

    class Meta:
        table_name = "redis_copies"


# Autoscaling (migration 0012): its settings (one row: the policy, where and what to create,
# the Vultr API key encrypted), the app pool's load samples the policy reads, and the history
# of every decision and action.


class ScalingSettings(BaseModel):
    id = AutoField()
    policy = JSONField()  # codeb.features.scaling.policy.Policy's fields
    cloud = JSONField()  # codeb.features.scaling.settings.CloudSettings' fields (no secret)
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


class ObjectStoreKey(BaseModel):
    """A key pair of a storage server's S3 store (codeb/features/backups/objectstore.py,
    migration 0018): `admin` (codeb makes buckets with it), `registry` (codeb's own Litestream
    replica, bucket `codeb`) or `environment` (that environment's Redis copies, its own
    bucket and nothing else). The secret is stored encrypted (Fernet)."""

    id = CharField(primary_key=True, max_length=40)
    server = CharField(max_length=63)
    scope = CharField(max_length=20)  # admin, registry, environment
    project_id = CharField(null=True, max_length=40)
    environment = CharField(null=True, max_length=20)
    bucket = CharField(null=True, max_length=63)
    access_key_id = CharField(unique=True, max_length=40)
    secret = TextField()
    created_at = DateTimeField(default=utcnow)
    applied_at = DateTimeField(null=True)  # when the store last took it (identities file)

    class Meta:
        table_name = "objectstore_keys"
        indexes = ((("server", "scope", "project_id", "environment"), True),)


class AppliedHostPlan(BaseModel):
    """What a deploy last applied on one host of an environment (migration 0019): the hash of
    the host's part of the plan, the operation and when. A deploy leaves the host untouched
    while it still holds (codeb/features/containers/touch.py); a failed deploy, another
    operation on the host or a drift check that saw drift there makes it forgotten."""

    id = AutoField()
    environment_id = CharField(max_length=40)
    host = CharField(max_length=63)
    plan_hash = CharField(max_length=64)
    operation_id = CharField(max_length=40)
    applied_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "applied_host_plans"
        indexes = ((("environment_id", "host"), True),)


ALL_MODELS: tuple[type[BaseModel], ...] = (
    Project,
    Environment,
    Server,
    Container,
    Placement,
    Backup,
    ApiKey,
    OperationLog,
    PortAllocation,
    ProtectionQueue,
    Operation,
    OperationEvent,
    Lock,
    Schedule,
    DnsZone,
    Domain,
    DomainServer,
    BackupTarget,
    BackupRestore,
    BackupDrill,
    WalCheck,
    RedisCopy,
    AcmeAccount,
    DomainCertificate,
    ScalingSettings,
    ScalingSample,
    ScalingEvent,
    ObjectStoreKey,
    AppliedHostPlan,
)
