"""The executor's state: error text, cancellation and targets on operations, and the locks
(leases) that serialise runs touching the same server."""

from peewee import CharField, DateTimeField, Model, TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("operations", "error", TextField(null=True)),
        migrator.add_column("operations", "cancel_requested_at", DateTimeField(null=True)),
        migrator.add_column("operations", "targets", TextField(null=True)),
    )

    class Lock(Model):
        resource = CharField(primary_key=True, max_length=120)
        operation_id = CharField(max_length=40)
        acquired_at = DateTimeField()
        expires_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "locks"

    db.create_tables([Lock])


def down(migrator, db):
    migrator.migrate(
        migrator.drop_table("locks"),
        migrator.drop_column("operations", "targets"),
        migrator.drop_column("operations", "cancel_requested_at"),
        migrator.drop_column("operations", "error"),
    )
