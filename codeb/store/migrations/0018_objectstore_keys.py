"""The storage server's S3 store (issue 10): its key pairs (`objectstore_keys`), one admin,
one for codeb's own replica and one per environment whose Redis copies it holds; secrets
encrypted."""

from peewee import CharField, DateTimeField, Model, TextField


def up(migrator, db):
    class ObjectStoreKey(Model):
        id = CharField(primary_key=True, max_length=40)
        server = CharField(max_length=63)
        scope = CharField(max_length=20)
        project_id = CharField(null=True, max_length=40)
        environment = CharField(null=True, max_length=20)
        bucket = CharField(null=True, max_length=63)
        access_key_id = CharField(unique=True, max_length=40)
        secret = TextField()
        created_at = DateTimeField()
        applied_at = DateTimeField(null=True)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "objectstore_keys"
            indexes = ((("server", "scope", "project_id", "environment"), True),)

    db.create_tables([ObjectStoreKey])


def down(migrator, db):
    migrator.migrate(migrator.drop_table("objectstore_keys"))
