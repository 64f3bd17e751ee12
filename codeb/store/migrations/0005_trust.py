"""Trust: API keys belong to a principal (a person or a service) and remember who created
them; queue entries remember the requester's principal and role, who confirmed them and the
approver's principal. Appended nullable columns: ALTER TABLE gives the models' exact schema.

Existing keys get a principal from the log: a key created through the API belongs to the
principal of the key that created it (so keys one admin minted never count as another
person); a key created on the server (`codeb keys create`, logged as "codeb") is its own."""

from peewee import CharField, IntegerField, Model, TextField


def _frozen(db, table, **columns):
    """A model of just the columns this migration reads or writes, as they are now."""
    meta = type("Meta", (), {"database": db, "table_name": table})
    return type(f"Frozen_{table}", (Model,), {"Meta": meta, **columns})


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("api_keys", "principal", CharField(null=True, max_length=64)),
        migrator.add_column("api_keys", "created_by", CharField(null=True, max_length=64)),
        migrator.add_column("protection_queue", "principal", CharField(null=True, max_length=64)),
        migrator.add_column("protection_queue", "key_role", CharField(null=True, max_length=20)),
        migrator.add_column("protection_queue", "confirmed_by", TextField(null=True)),
        migrator.add_column(
            "protection_queue", "approved_principal", CharField(null=True, max_length=64)
        ),
    )
    creators = {}
    rows = db.execute_sql(
        "SELECT target, key_name FROM operation_logs "
        "WHERE operation = 'api_key_create' AND status = 'executed' ORDER BY id"
    ).fetchall()
    for target, creator in rows:
        creators.setdefault(target, creator)
    keys = _frozen(
        db,
        "api_keys",
        id=IntegerField(primary_key=True),
        name=CharField(),
        principal=CharField(null=True),
        created_by=CharField(null=True),
    )
    principal = {}
    for key in keys.select().order_by(keys.id):
        creator = creators.get(key.name)
        inherited = creator is not None and creator != "codeb" and creator in principal
        principal[key.name] = principal[creator] if inherited else key.name
        keys.update(principal=principal[key.name], created_by=creator).where(
            keys.id == key.id
        ).execute()
    db.execute_sql(
        "UPDATE protection_queue SET principal = (SELECT principal FROM api_keys "
        "WHERE api_keys.id = protection_queue.key_id), key_role = (SELECT role FROM api_keys "
        "WHERE api_keys.id = protection_queue.key_id)"
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("protection_queue", "approved_principal"),
        migrator.drop_column("protection_queue", "confirmed_by"),
        migrator.drop_column("protection_queue", "key_role"),
        migrator.drop_column("protection_queue", "principal"),
        migrator.drop_column("api_keys", "created_by"),
        migrator.drop_column("api_keys", "principal"),
    )
