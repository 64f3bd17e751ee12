"""Placement: which server each component (app, db, redis) of an environment runs on, so a role
may have any number of servers. Existing installations keep what they had: every container
that is not removed is placed where it runs, and an active environment's db and redis that
never ran are placed on the server .env files named until now (the first registered server of
the role), so no .env file changes."""

from peewee import AutoField, CharField, DateTimeField, ForeignKeyField, Model

_PLACE_DATA = """
INSERT INTO placements (environment_id, component, server_id, created_at)
SELECT e.id, '{component}',
       (SELECT MIN(s.id) FROM servers s WHERE s.role = '{role}' AND s.status != 'deleted'),
       CURRENT_TIMESTAMP
FROM environments e
WHERE e.status = 'active'
  AND NOT EXISTS (SELECT 1 FROM placements p
                  WHERE p.environment_id = e.id AND p.component = '{component}')
  AND EXISTS (SELECT 1 FROM servers s WHERE s.role = '{role}' AND s.status != 'deleted')
"""


def up(migrator, db):
    class Environment(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "environments"

    class Server(Model):
        id = AutoField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "servers"

    class Placement(Model):
        id = AutoField()
        environment = ForeignKeyField(Environment, column_name="environment_id")
        component = CharField(max_length=10)
        server = ForeignKeyField(Server, column_name="server_id")
        created_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "placements"
            indexes = ((("environment", "component", "server"), True),)

    db.create_tables([Placement])
    # Where the containers run now (one row per environment, component and server), and where
    # the volume of a removed db or redis container stays.
    db.execute_sql(
        """
        INSERT INTO placements (environment_id, component, server_id, created_at)
        SELECT DISTINCT e.id, c.server_type, s.id, CURRENT_TIMESTAMP
        FROM containers c
        JOIN environments e
          ON e.project_id = c.project_id AND e.name = c.environment AND e.status = 'active'
        JOIN servers s ON s.ip = c.server_ip AND s.status != 'deleted'
        WHERE c.server_type IN ('app', 'db', 'redis')
          AND (c.status != 'removed' OR (c.server_type != 'app' AND c.volume IS NOT NULL))
        """
    )
    for component, role in (("db", "db"), ("redis", "cache")):
        db.execute_sql(_PLACE_DATA.format(component=component, role=role))


def down(migrator, db):
    migrator.migrate(migrator.drop_table("placements"))
