"""Where the integration suite finds its PostgreSQL and MySQL/MariaDB servers.

In this order:

1. the URL in the engine's variable (DBWARD_TEST_POSTGRES_URL, DBWARD_TEST_MYSQL_URL), which
   `make test` points at the machine's local services;
2. without it, where a Docker engine answers, a container started with testcontainers for
   the whole test session and stopped at its end;
3. without either, no database: the tests that need it are skipped on a developer machine
   and fail under CI=true, because CI never passes by skipping.

The Docker probe and the container start are parameters of `database_url`, so the decision
is unit-tested without Docker. The probe answers within a couple of seconds when no engine
is there, instead of hanging on an unanswered socket.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import psycopg
import pymysql
import pytest

CONNECT_TIMEOUT_SECS = 5
DOCKER_PING_TIMEOUT_SECS = 2.0
CONTAINER_READY_TIMEOUT_SECS = 120.0


def postgres_connect_error(url: str) -> str | None:
    """None when PostgreSQL at `url` accepts a connection, else why not."""
    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECS).close()
    except psycopg.Error as exc:
        return str(exc)
    return None


def mysql_connect_error(url: str) -> str | None:
    """None when MySQL/MariaDB at `url` accepts a connection, else why not."""
    parts = urlsplit(url)
    try:
        pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            database=parts.path.lstrip("/") or None,
            connect_timeout=CONNECT_TIMEOUT_SECS,
        ).close()
    except pymysql.Error as exc:
        return str(exc)
    return None


def postgres_container(image: str) -> Any:
    """A testcontainers PostgreSQL, credentialled like docker-compose.yml."""
    from testcontainers.community.postgres import PostgresContainer

    return PostgresContainer(
        image, username="postgres", password="postgres", dbname="test", driver=None
    )


def mysql_container(image: str) -> Any:
    """A testcontainers MySQL/MariaDB (root can create databases), like docker-compose.yml."""
    from testcontainers.community.mysql import MySqlContainer

    return MySqlContainer(image, username="root", password="root", dbname="test")


@dataclass(frozen=True)
class Engine:
    """One database engine the suite needs: where its URL comes from and how to start one."""

    label: str
    variable: str
    image: str
    connect_error: Callable[[str], str | None]
    container: Callable[[str], Any]


POSTGRES = Engine(
    "PostgreSQL",
    "DBWARD_TEST_POSTGRES_URL",
    "postgres:16",
    postgres_connect_error,
    postgres_container,
)
MYSQL = Engine(
    "MySQL", "DBWARD_TEST_MYSQL_URL", "mariadb:10.11", mysql_connect_error, mysql_container
)

#: Starts a server for the engine; the context yields its URL and stops it on exit.
ContainerStarter = Callable[[Engine], AbstractContextManager[str]]


def in_ci(environ: Mapping[str, str]) -> bool:
    return environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str, environ: Mapping[str, str]) -> NoReturn:
    """Skip the test on a developer machine; fail it under CI=true."""
    if in_ci(environ):
        pytest.fail(f"{reason} (CI=true: a missing database fails the run)")
    pytest.skip(reason)


def docker_reachable(timeout_secs: float = DOCKER_PING_TIMEOUT_SECS) -> bool:
    """Whether testcontainers can reach a Docker engine, answered within about timeout_secs.

    Uses testcontainers' own client, so it looks where the containers would be started
    (DOCKER_HOST, the Docker context, ~/.testcontainers.properties).
    """
    try:
        from testcontainers.core.docker_client import DockerClient
    except ImportError:
        return False
    try:
        client = DockerClient(timeout=timeout_secs).client
    except Exception:  # no socket, refused, timed out, no permission: no Docker for us
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def wait_until_connects(engine: Engine, url: str, timeout_secs: float) -> None:
    """Poll until the server accepts connections; raise when the deadline passes."""
    deadline = time.monotonic() + timeout_secs
    while (error := engine.connect_error(url)) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{engine.label} in {engine.image} did not accept connections: {error}"
            )
        time.sleep(0.5)


@contextmanager
def start_container(engine: Engine) -> Iterator[str]:
    """Run the engine's image in Docker; yield a URL to its `test` database; then stop it."""
    with engine.container(engine.image) as container:
        url: str = container.get_connection_url()
        wait_until_connects(engine, url, CONTAINER_READY_TIMEOUT_SECS)
        yield url


@contextmanager
def database_url(
    engine: Engine,
    *,
    environ: Mapping[str, str] = os.environ,
    is_docker_reachable: Callable[[], bool] = docker_reachable,
    start: ContainerStarter = start_container,
) -> Iterator[str]:
    """The URL of a server for `engine`, following the order in the module docstring."""
    url = environ.get(engine.variable)
    if url:
        error = engine.connect_error(url)
        if error is not None:
            unavailable(f"{engine.label} at {url} is not reachable: {error}", environ)
        yield url
        return
    if not is_docker_reachable():
        unavailable(
            f"{engine.variable} is not set and no Docker engine is reachable"
            f" to start {engine.image}",
            environ,
        )
    with ExitStack() as running:
        try:
            url = running.enter_context(start(engine))
        except Exception as exc:
            unavailable(f"could not start {engine.image} with testcontainers: {exc}", environ)
        yield url
