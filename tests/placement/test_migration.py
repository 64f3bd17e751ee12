"""Migration 0009 on a database that predates placement: every container is placed where it
runs, and an environment's db and Redis that never ran are placed on the server its .env
files named until now (the first registered server of the role), so no .env file changes."""

from __future__ import annotations

from playhouse.migrations import Runner

from codeb.store.db import MIGRATIONS_DIR, open_database

NOW = "2026-01-01 00:00:00"


def test_existing_containers_and_env_files_keep_their_hosts(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'old.db'}")
    with db.connection_context():
        runner = Runner(db, directory=str(MIGRATIONS_DIR))
        names = [m.name for m in runner.migrations()]
        before = names[names.index("0009_placement") - 1]
        runner.up(target=before)
        sql = db.execute_sql
        sql(
            "INSERT INTO projects (id, name, type, local_db_password, created_at, updated_at, "
            "status) VALUES ('prj_1', 'shop', 'nodejs', 'x', ?, ?, 'active')",
            (NOW, NOW),
        )
        for env_id, name, status in (
            ("env_s", "staging", "active"),
            ("env_p", "production", "active"),
            ("env_d", "preview~1", "deleted"),
        ):
            sql(
                "INSERT INTO environments (id, project_id, name, db_password, redis_password, "
                "status, created_at) VALUES (?, 'prj_1', ?, 'x', 'x', ?, ?)",
                (env_id, name, status, NOW),
            )
        for name, ip, role, status in (
            ("old", "10.1.0.9", "db", "deleted"),
            ("app1", "10.1.0.1", "app", "ready"),
            ("db1", "10.1.0.2", "db", "ready"),
            ("db2", "10.1.0.3", "db", "ready"),
            ("cache1", "10.1.0.4", "cache", "ready"),
        ):
            sql(
                "INSERT INTO servers (name, ip, role, ssh_user, ssh_port, provider, status, "
                "created_at, updated_at) VALUES (?, ?, ?, 'root', 22, 'manual', ?, ?, ?)",
                (name, ip, role, status, NOW, NOW),
            )
        # Staging runs: app on app1, db on db2 (not the first db server), redis removed but
        # its volume kept on cache1. Production never ran.
        for cid, env, kind, ip, status, volume in (
            ("c1", "staging", "app", "10.1.0.1", "running", None),
            ("c2", "staging", "db", "10.1.0.3", "running", "shop-staging-db-data"),
            ("c3", "staging", "redis", "10.1.0.4", "removed", "shop-staging-redis-data"),
            ("c4", "staging", "app", "10.1.0.1", "removed", None),
        ):
            sql(
                "INSERT INTO containers (id, project_id, environment, server_type, server_ip, "
                "container_name, image, status, created_at, updated_at, volume) "
                "VALUES (?, 'prj_1', ?, ?, ?, 'n', 'img', ?, ?, ?, ?)",
                (cid, env, kind, ip, status, NOW, NOW, volume),
            )
        runner.up()
        rows = sql(
            "SELECT p.environment_id, p.component, s.name FROM placements p "
            "JOIN servers s ON s.id = p.server_id ORDER BY 1, 2, 3"
        ).fetchall()
    db.close()
    assert rows == [
        ("env_p", "db", "db1"),  # never ran: the first db server, as its .env file said
        ("env_p", "redis", "cache1"),
        ("env_s", "app", "app1"),
        ("env_s", "db", "db2"),  # where it runs
        ("env_s", "redis", "cache1"),  # where its volume is
    ]
