"""The Protection Layer's columns: what a queue entry is bound to (target, parameters hash,
requesting key), its cooldown, confirmations and approval; and the containers' latest health
check, which the `health_check_passed` requirement reads.

PostgreSQL adds the columns in place. SQLite rebuilds the two tables (rename, create the frozen
new shape, copy, drop), so the stored schema is exactly what the models create.
"""

from peewee import (
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    SqliteDatabase,
    TextField,
)

NEW_COLUMNS = {
    "containers": {
        "health_status": CharField(null=True, max_length=20),
        "health_checked_at": DateTimeField(null=True),
    },
    "protection_queue": {
        "target_kind": CharField(null=True, max_length=40),
        "target_ref": CharField(null=True, max_length=200),
        "target_name": CharField(null=True, max_length=200),
        "binding_hash": CharField(null=True, max_length=64),
        "key_id": IntegerField(null=True),
        "key_name": CharField(null=True, max_length=64),
        "requested_by": CharField(null=True, max_length=10),
        "cooldown_ends_at": DateTimeField(null=True),
        "confirmations": IntegerField(default=0),
        "last_confirmed_at": DateTimeField(null=True),
        "approved_key_id": IntegerField(null=True),
        "approved_by": CharField(null=True, max_length=64),
        "approved_at": DateTimeField(null=True),
        "finished_at": DateTimeField(null=True),
    },
}


def _frozen_models(db):
    class Project(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "projects"

    class Container(Model):
        id = CharField(primary_key=True, max_length=40)
        project = ForeignKeyField(Project)
        environment = CharField(max_length=20)
        server_type = CharField(max_length=20)
        server_ip = CharField(max_length=45)
        container_name = CharField(max_length=200)
        image = TextField()
        port_external = IntegerField(null=True)
        port_internal = IntegerField(null=True)
        status = CharField(max_length=20, default="created")
        created_at = DateTimeField()
        updated_at = DateTimeField()
        health_status = CharField(null=True, max_length=20)
        health_checked_at = DateTimeField(null=True)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "containers"

    class ProtectionQueue(Model):
        id = CharField(primary_key=True, max_length=40)
        operation = CharField(max_length=64)
        danger_level = IntegerField()
        project = ForeignKeyField(Project, null=True)
        details = TextField()
        confirm_token = CharField(unique=True, null=True, max_length=64)
        expires_at = DateTimeField()
        status = CharField(max_length=20, default="pending")
        created_at = DateTimeField()
        target_kind = CharField(null=True, max_length=40)
        target_ref = CharField(null=True, max_length=200)
        target_name = CharField(null=True, max_length=200)
        binding_hash = CharField(null=True, max_length=64)
        key_id = IntegerField(null=True)
        key_name = CharField(null=True, max_length=64)
        requested_by = CharField(null=True, max_length=10)
        cooldown_ends_at = DateTimeField(null=True)
        confirmations = IntegerField(default=0)
        last_confirmed_at = DateTimeField(null=True)
        approved_key_id = IntegerField(null=True)
        approved_by = CharField(null=True, max_length=64)
        approved_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "protection_queue"

    return Container, ProtectionQueue


def _rebuild_sqlite_table(db, model, new_columns):
    table = model._meta.table_name
    old = f"{table}__before_0002"
    kept = [f.column_name for f in model._meta.sorted_fields if f.column_name not in new_columns]
    db.execute_sql(f'ALTER TABLE "{table}" RENAME TO "{old}"')
    indexes = db.execute_sql(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
        (old,),
    ).fetchall()
    for (name,) in indexes:
        db.execute_sql(f'DROP INDEX "{name}"')
    db.create_tables([model])
    defaults = {name: field.default for name, field in new_columns.items() if not field.null}
    columns = ", ".join(f'"{c}"' for c in [*kept, *defaults])
    values = ", ".join([*(f'"{c}"' for c in kept), *("?" for _ in defaults)])
    db.execute_sql(
        f'INSERT INTO "{table}" ({columns}) SELECT {values} FROM "{old}"',  # noqa: S608
        list(defaults.values()),
    )
    db.execute_sql(f'DROP TABLE "{old}"')


def up(migrator, db):
    if isinstance(db, SqliteDatabase):
        for model in _frozen_models(db):
            _rebuild_sqlite_table(db, model, NEW_COLUMNS[model._meta.table_name])
        return
    for table, columns in NEW_COLUMNS.items():
        migrator.migrate(*(migrator.add_column(table, name, f) for name, f in columns.items()))


def down(migrator, db):
    for table, columns in NEW_COLUMNS.items():
        migrator.migrate(*(migrator.drop_column(table, name) for name in columns))
