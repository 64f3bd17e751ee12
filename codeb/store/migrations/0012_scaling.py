"""Autoscaling (issue 14): its settings (the policy, the cloud's region/plan/image, the Vultr
API key encrypted), the app pool's load samples and the history of decisions and actions."""

from peewee import AutoField, CharField, DateTimeField, FloatField, Model, TextField


def up(migrator, db):
    class ScalingSettings(Model):
        id = AutoField()
        policy = TextField()
        cloud = TextField()
        api_key = TextField(null=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "scaling_settings"

    class ScalingSample(Model):
        id = AutoField()
        at = DateTimeField(index=True)
        cpu_pct = FloatField()
        mem_pct = FloatField()
        servers = TextField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "scaling_samples"

    class ScalingEvent(Model):
        id = AutoField()
        kind = CharField(max_length=10)
        trigger = CharField(max_length=10)
        requested_by = CharField(max_length=100, null=True)
        status = CharField(max_length=24)
        decision = TextField(null=True)
        steps = TextField(null=True)
        failed_step = CharField(max_length=30, null=True)
        error = TextField(null=True)
        label = CharField(max_length=64, null=True, index=True)
        instance_id = CharField(max_length=100, null=True, index=True)
        server_name = CharField(max_length=63, null=True)
        operation_id = CharField(max_length=40, null=True)
        monthly_cost = FloatField(null=True)
        started_at = DateTimeField()
        finished_at = DateTimeField(null=True)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "scaling_events"

    db.create_tables([ScalingSettings, ScalingSample, ScalingEvent], safe=True)


def down(migrator, db):
    migrator.migrate(
        migrator.drop_table("scaling_events"),
        migrator.drop_table("scaling_samples"),
        migrator.drop_table("scaling_settings"),
    )
