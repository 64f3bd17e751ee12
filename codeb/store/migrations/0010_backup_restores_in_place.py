"""Backups, the rest of issue 10: the canary a base backup carries (a row codeb writes into
the database's `codeb_canary` table just before the backup starts: a drill restores the backup
and finds it, issue 11), and restores in place (`backup_restores.mode`, the safety backup taken
before the live data was touched, the backup that proved the chain afterwards, the container
row a restore into a new container is listed as)."""

from peewee import CharField, DateTimeField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("backups", "canary", CharField(null=True, max_length=100)),
        migrator.add_column("backups", "canary_at", DateTimeField(null=True)),
        migrator.add_column("backup_restores", "mode", CharField(max_length=20, default="new")),
        migrator.add_column(
            "backup_restores", "safety_backup_id", CharField(null=True, max_length=40)
        ),
        migrator.add_column(
            "backup_restores", "after_backup_id", CharField(null=True, max_length=40)
        ),
        migrator.add_column("backup_restores", "container_id", CharField(null=True, max_length=40)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("backup_restores", "container_id"),
        migrator.drop_column("backup_restores", "after_backup_id"),
        migrator.drop_column("backup_restores", "safety_backup_id"),
        migrator.drop_column("backup_restores", "mode"),
        migrator.drop_column("backups", "canary_at"),
        migrator.drop_column("backups", "canary"),
    )
