"""What a deploy last applied on each host of an environment (`applied_host_plans`): the hash of
that host's part of the plan, by which operation and when. A deploy leaves a host untouched
only while its part of the plan is unchanged since then (codeb/features/containers/touch.py)."""

from peewee import AutoField, CharField, DateTimeField, Model


def up(migrator, db):
    class AppliedHostPlan(Model):
        id = AutoField()
        environment_id = CharField(max_length=40)
        host = CharField(max_length=63)
        plan_hash = CharField(max_length=64)
        operation_id = CharField(max_length=40)
        applied_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "applied_host_plans"
            indexes = ((("environment_id", "host"), True),)

    db.create_tables([AppliedHostPlan])


def down(migrator, db):
    migrator.migrate(migrator.drop_table("applied_host_plans"))
