"""An index in the order GET /api/projects lists (created_at, name), with the status it filters
on: the first page stops after its rows, the count reads the index only, and no listing sorts
the whole table (bench/projects_scale.py: 100 to 10,000 projects)."""


def up(migrator, db):
    migrator.migrate(
        migrator.add_index("projects", ("created_at", "name", "status"), unique=False),
    )


def down(migrator, db):
    migrator.migrate(migrator.drop_index("projects", "projects_created_at_name_status"))
