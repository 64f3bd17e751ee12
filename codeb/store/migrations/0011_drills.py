"""Backups proven by restore (issue 11): restore drills of backups and Redis copies
(`backup_drills`), the live state of each target's WAL shipping (`wal_checks`) and copies of
cache components' data on the storage server (`redis_copies`)."""

from peewee import (
    CharField,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def up(migrator, db):
    class Project(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "projects"

    class BackupDrill(Model):
        id = CharField(primary_key=True, max_length=40)
        project = ForeignKeyField(Project, column_name="project_id")
        environment = CharField(max_length=20)
        component = CharField(max_length=20, default="db")
        backup_id = CharField(max_length=40, index=True)
        kind = CharField(max_length=20, default="manual")
        status = CharField(max_length=20, default="running")
        server = CharField(null=True, max_length=63)
        started_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)
        duration_s = FloatField(null=True)
        reason = TextField(null=True)
        checks = TextField(null=True)
        canary_expected = CharField(null=True, max_length=100)
        canary_found = CharField(null=True, max_length=100)
        tables_count = IntegerField(null=True)
        rows_count = IntegerField(null=True)
        operation_id = CharField(null=True, max_length=40)
        created_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "backup_drills"

    class WalCheck(Model):
        target_id = CharField(primary_key=True, max_length=40)
        checked_at = DateTimeField()
        receiver = CharField(max_length=20)
        detail = TextField(null=True)
        last_wal_at = DateTimeField(null=True)
        lag_bytes = IntegerField(null=True)
        failures = IntegerField(default=0)
        stopped_since = DateTimeField(null=True)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "wal_checks"

    class RedisCopy(Model):
        id = CharField(primary_key=True, max_length=40)
        project = ForeignKeyField(Project, column_name="project_id")
        environment = CharField(max_length=20)
        component = CharField(max_length=20, default="cache")
        source = CharField(max_length=200)
        source_server = CharField(max_length=63)
        storage_server = CharField(max_length=63)
        kind = CharField(max_length=20, default="manual")
        format = CharField(null=True, max_length=20)
        status = CharField(max_length=20, default="running")
        path = TextField(null=True)
        size_bytes = IntegerField(null=True)
        keys = IntegerField(null=True)
        canary = CharField(null=True, max_length=100)
        started_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)
        verified_at = DateTimeField(null=True)
        error = TextField(null=True)
        operation_id = CharField(null=True, max_length=40)
        created_at = DateTimeField()
        deleted_at = DateTimeField(null=True)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "redis_copies"

    db.create_tables([BackupDrill, WalCheck, RedisCopy])


def down(migrator, db):
    migrator.migrate(
        migrator.drop_table("redis_copies"),
        migrator.drop_table("wal_checks"),
        migrator.drop_table("backup_drills"),
    )
