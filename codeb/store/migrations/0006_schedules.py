"""The scheduler's state: one row per periodic job with its next run, its last run and the
lease a process holds while it runs it."""

from peewee import CharField, DateTimeField, Model, TextField


def up(migrator, db):
    class Schedule(Model):
        name = CharField(primary_key=True, max_length=64)
        next_run_at = DateTimeField()
        last_started_at = DateTimeField(null=True)
        last_finished_at = DateTimeField(null=True)
        last_status = CharField(null=True, max_length=20)
        last_result = TextField(null=True)
        last_error = TextField(null=True)
        lease_owner = CharField(null=True, max_length=120)
        lease_expires_at = DateTimeField(null=True)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "schedules"

    db.create_tables([Schedule])


def down(migrator, db):
    migrator.migrate(migrator.drop_table("schedules"))
