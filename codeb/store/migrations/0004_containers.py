"""Containers: the image id that runs, the previous image (rollback), the data volume and the
last operation. Appended nullable columns: ALTER TABLE gives the models' exact schema."""

from peewee import CharField, TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("containers", "image_id", CharField(null=True, max_length=80)),
        migrator.add_column("containers", "previous_image", TextField(null=True)),
        migrator.add_column("containers", "volume", CharField(null=True, max_length=200)),
        migrator.add_column("containers", "last_operation_id", CharField(null=True, max_length=40)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("containers", "last_operation_id"),
        migrator.drop_column("containers", "volume"),
        migrator.drop_column("containers", "previous_image"),
        migrator.drop_column("containers", "image_id"),
    )
