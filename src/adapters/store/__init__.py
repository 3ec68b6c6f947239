"""The server's control-plane store: SQLAlchemy Core over SQLite (embedded) or PostgreSQL.

`engine.create_store_engine` builds the engine, `migrations.migrate` brings the schema to
the version this code knows, `schema` holds the tables, and `audit_log` appends to and
verifies the audit hash chain inside the caller's transaction (docs/server.md §7.1).
"""
