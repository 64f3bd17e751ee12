"""Domains (issue 12): certificates codeb obtains itself (ACME DNS-01 through its own dns
servers, for wildcards, which Debian's Caddy cannot order), with their private keys
encrypted, the last issuance error and when it happened, and the ACME account per
directory (its key encrypted)."""

from peewee import CharField, DateTimeField, IntegerField, Model, TextField


def up(migrator, db):
    class AcmeAccount(Model):
        directory = CharField(primary_key=True, max_length=500)
        account_key = TextField()
        uri = CharField(null=True, max_length=500)
        email = CharField(null=True, max_length=254)
        created_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "acme_accounts"

    class DomainCertificate(Model):
        name = CharField(primary_key=True, max_length=253)
        names = TextField()
        fullchain = TextField(null=True)
        private_key = TextField(null=True)
        issuer = CharField(null=True, max_length=300)
        serial = CharField(null=True, max_length=80)
        not_before = DateTimeField(null=True)
        not_after = DateTimeField(null=True)
        issued_at = DateTimeField(null=True)
        attempts = IntegerField(default=0)
        last_error = TextField(null=True)
        last_error_at = DateTimeField(null=True)
        next_attempt_at = DateTimeField(null=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False
            table_name = "domain_certificates"

    db.create_tables([AcmeAccount, DomainCertificate])
