"""Domains (issue 12): the zones codeb holds on its dns servers, the domains its proxies serve,
and per proxy/dns server what codeb configured there (PowerDNS's API key, encrypted; the
Caddyfile last applied)."""

from peewee import (
    AutoField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def up(migrator, db):
    class Project(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = "projects"

    class Server(Model):
        id = AutoField()

        class Meta:
            database = db
            table_name = "servers"

    class DnsZone(Model):
        id = AutoField()
        name = CharField(unique=True, max_length=253)
        created_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "dns_zones"

    class Domain(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(unique=True, max_length=253)
        zone = ForeignKeyField(DnsZone, backref="domains", column_name="zone_id")
        project = ForeignKeyField(Project, backref="domains", column_name="project_id")
        environment = CharField(max_length=20)
        status = CharField(max_length=20)
        last_error = TextField(null=True)
        last_operation_id = CharField(null=True, max_length=40)
        created_at = DateTimeField()
        updated_at = DateTimeField()
        applied_at = DateTimeField(null=True)
        cert_issuer = CharField(null=True, max_length=200)
        cert_not_after = DateTimeField(null=True)
        cert_checked_at = DateTimeField(null=True)
        cert_error = TextField(null=True)

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "domains"

    class DomainServer(Model):
        server = ForeignKeyField(Server, primary_key=True, column_name="server_id")
        kind = CharField(max_length=10)
        api_key = TextField(null=True)
        api_port = IntegerField(null=True)
        dns_port = IntegerField()
        configured_hash = CharField(null=True, max_length=64)
        applied_config = TextField(null=True)
        applied_hash = CharField(null=True, max_length=64)
        applied_at = DateTimeField(null=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "domain_servers"

    db.create_tables([DnsZone, Domain, DomainServer])


def down(migrator, db):
    migrator.migrate(
        migrator.drop_table("domain_servers"),
        migrator.drop_table("domains"),
        migrator.drop_table("dns_zones"),
    )
