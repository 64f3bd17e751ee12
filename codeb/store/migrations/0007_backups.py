"""Backups (issue 10): the db components whose WAL streams to a storage server
(`backup_targets`, replication password encrypted), what each backup is in Barman's catalogue
(columns appended to `backups`), and restores into new containers (`backup_restores`)."""

from peewee import (
    CharField,
    DateTimeField,
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

    class Backup(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "backups"

    class BackupTarget(Model):
        id = CharField(primary_key=True, max_length=40)
        project = ForeignKeyField(Project, column_name="project_id")
        environment = CharField(max_length=20)
        component = CharField(max_length=20, default="db")
        name = CharField(unique=True, max_length=120)
        storage_server = CharField(max_length=63)
        db_server = CharField(max_length=63)
        db_port = IntegerField()
        replication_password = TextField()
        schedule = CharField(max_length=64, default="daily")
        status = CharField(max_length=20, default="pending")
        enabled_at = DateTimeField(null=True)
        synced_at = DateTimeField(null=True)
        wal_first = CharField(null=True, max_length=40)
        wal_last = CharField(null=True, max_length=40)
        wal_last_at = DateTimeField(null=True)
        last_error = TextField(null=True)
        created_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "backup_targets"

    class BackupRestore(Model):
        id = CharField(primary_key=True, max_length=40)
        backup = ForeignKeyField(Backup, column_name="backup_id")
        project = ForeignKeyField(Project, column_name="project_id")
        environment = CharField(max_length=20)
        container_name = CharField(unique=True, max_length=200)
        server = CharField(max_length=63)
        port = IntegerField()
        volume = CharField(max_length=200)
        target_time = DateTimeField(null=True)
        status = CharField(max_length=20, default="restoring")
        operation_id = CharField(null=True, max_length=40)
        error = TextField(null=True)
        created_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "backup_restores"

    migrator.migrate(
        migrator.add_column("backups", "component", CharField(max_length=20, default="db")),
        migrator.add_column("backups", "target_id", CharField(null=True, max_length=40)),
        migrator.add_column("backups", "kind", CharField(null=True, max_length=20)),
        migrator.add_column("backups", "barman_id", CharField(null=True, max_length=40)),
        migrator.add_column("backups", "operation_id", CharField(null=True, max_length=40)),
        migrator.add_column("backups", "started_at", DateTimeField(null=True)),
        migrator.add_column("backups", "finished_at", DateTimeField(null=True)),
        migrator.add_column("backups", "begin_wal", CharField(null=True, max_length=40)),
        migrator.add_column("backups", "end_wal", CharField(null=True, max_length=40)),
        migrator.add_column("backups", "begin_time", DateTimeField(null=True)),
        migrator.add_column("backups", "end_time", DateTimeField(null=True)),
        migrator.add_column("backups", "error", TextField(null=True)),
        migrator.add_column("backups", "deleted_at", DateTimeField(null=True)),
    )
    db.create_tables([BackupTarget, BackupRestore])


def down(migrator, db):
    migrator.migrate(
        migrator.drop_table("backup_restores"),
        migrator.drop_table("backup_targets"),
        *(
            migrator.drop_column("backups", c)
            for c in (
                "deleted_at",
                "error",
                "end_time",
                "begin_time",
                "end_wal",
                "begin_wal",
                "finished_at",
                "started_at",
                "operation_id",
                "barman_id",
                "kind",
                "target_id",
                "component",
            )
        ),
    )
