"""The CLI's client configuration: which server to call, with which token, and the
defaults a command falls back on (docs/server.md §8.3).

Server URL and token, strongest first:

1. `DBWARD_SERVER_URL` / `DBWARD_TOKEN`, each on its own;
2. the file named by `--config PATH` (or `DBWARD_CONFIG`), used on its own, or on top of
   the global file with `--merge-global`;
3. otherwise `./dbward.toml` (project) over `~/.config/dbward/config.toml` (global), key by key.

A client file holds `[server] url, token`, `default_database`, `default_environment`,
`allow_insecure`, `migrations_dir` and `[databases.<name>] migrations_dir`; any other key is
refused naming the file and the key. `${VAR}` / `${VAR:-default}` expand inside the strings
with the agent config's shell semantics. A global token is never sent to a URL set by a
project file when the global file names a different server: a repository's `dbward.toml`
must not be able to collect the token a user keeps for another server.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from adapters.config.agent import is_local_host
from adapters.config.env_expansion import ExpansionError, expand_values

ENV_SERVER_URL = "DBWARD_SERVER_URL"
ENV_TOKEN = "DBWARD_TOKEN"  # noqa: S105 - the variable's name, not a token
ENV_CONFIG = "DBWARD_CONFIG"
PROJECT_CONFIG_NAME = "dbward.toml"
GLOBAL_CONFIG_PATH = Path(".config") / "dbward" / "config.toml"  # under the home directory
DEFAULT_ENVIRONMENT = "development"
DEFAULT_MIGRATIONS_DIR = "migrations"
NO_SERVER_CONFIGURED = (
    "no server configured: set DBWARD_SERVER_URL and DBWARD_TOKEN, or pass --config"
)
_TOP_LEVEL_KEYS = frozenset(
    {
        "server",
        "default_database",
        "default_environment",
        "allow_insecure",
        "migrations_dir",
        "databases",
    }
)
_T = TypeVar("_T")
_SERVER_KEYS = frozenset({"url", "token"})
_DATABASE_KEYS = frozenset({"migrations_dir"})


class ClientConfigError(Exception):
    """The client configuration cannot be used; the message says what to fix."""


class NoServerConfigured(ClientConfigError):
    """Nothing names a server: no environment variable, no config file with one."""

    def __init__(self) -> None:
        super().__init__(NO_SERVER_CONFIGURED)


@dataclass(frozen=True)
class ClientConfig:
    """Where to send API calls and with which token; sources name where each came from."""

    server_url: str
    token: str = field(repr=False)
    url_source: str = ""
    token_source: str = ""
    warnings: tuple[str, ...] = ()
    default_database: str | None = None
    default_environment: str | None = None
    allow_insecure: bool = False
    #: `[databases.<name>]` of the files, name → its `migrations_dir` (None: not set).
    databases: Mapping[str, str | None] = field(default_factory=dict)
    migrations_dir: str | None = None

    def database(self, flag: str | None) -> str:
        """`--database` (one of `[databases]` when that is set) → `default_database` → the
        only configured database; else the command cannot know which."""
        if flag is not None:
            if self.databases and flag not in self.databases:
                raise ClientConfigError(
                    f"database {flag!r} is not in the client config's [databases] "
                    f"({', '.join(sorted(self.databases))})"
                )
            return flag
        if self.default_database:
            return self.default_database
        if len(self.databases) == 1:
            return next(iter(self.databases))
        raise ClientConfigError(
            "which database? pass --database NAME, or set default_database in the client config"
        )

    def environment(self, flag: str | None) -> str:
        """`-e` → `default_environment` → `development`."""
        return flag or self.default_environment or DEFAULT_ENVIRONMENT

    def migrations_directory(self, flag: Path | None, database: str) -> Path:
        """`--dir` → `[databases.<db>] migrations_dir` → `migrations_dir` → `migrations`."""
        if flag is not None:
            return flag
        return Path(self.databases.get(database) or self.migrations_dir or DEFAULT_MIGRATIONS_DIR)


@dataclass(frozen=True)
class _ClientFile:
    """One client file, expanded; empty strings count as unset."""

    path: Path
    url: str | None = None
    token: str | None = None
    default_database: str | None = None
    default_environment: str | None = None
    allow_insecure: bool | None = None
    migrations_dir: str | None = None
    databases: Mapping[str, str | None] = field(default_factory=dict)


def resolve_client_config(
    config_path: Path | None,
    environ: Mapping[str, str],
    *,
    cwd: Path,
    home: Path | None,
    merge_global: bool = False,
) -> ClientConfig:
    """Resolve the server URL, the token and the defaults (precedence in the module docstring)."""
    env_url = (environ.get(ENV_SERVER_URL) or "").strip() or None
    env_token = (environ.get(ENV_TOKEN) or "").strip() or None

    explicit = config_path
    explicit_origin = "--config"
    if explicit is None and environ.get(ENV_CONFIG):
        explicit, explicit_origin = Path(environ[ENV_CONFIG]), ENV_CONFIG
    global_path = None if home is None else home / GLOBAL_CONFIG_PATH
    candidates: list[Path] = []
    if explicit is not None:
        path = explicit if explicit.is_absolute() else cwd / explicit
        if not path.is_file():
            raise ClientConfigError(f"config file not found: {path} (from {explicit_origin})")
        candidates.append(path)
        if merge_global and global_path is not None and global_path.is_file():
            candidates.append(global_path)
    else:
        candidates.append(cwd / PROJECT_CONFIG_NAME)
        if global_path is not None:
            candidates.append(global_path)
    files = [_read_client_file(p, environ) for p in candidates if p.is_file()]

    url_file = next((f for f in files if f.url is not None), None)
    token_file = next((f for f in files if f.token is not None), None)
    url = env_url or (url_file.url if url_file else None)
    token = env_token or (token_file.token if token_file else None)
    if url is None and token is None:
        raise NoServerConfigured()
    searched = ", ".join(str(f.path) for f in files) or "no config file found"
    if url is None:
        raise ClientConfigError(
            f"no server URL configured: set {ENV_SERVER_URL}, or [server] url ({searched})"
        )
    if token is None:
        raise ClientConfigError(
            f"no API token configured: set {ENV_TOKEN}, or [server] token ({searched})"
        )
    url_source = ENV_SERVER_URL if env_url else str(url_file.path if url_file else "")
    token_source = ENV_TOKEN if env_token else str(token_file.path if token_file else "")

    if (
        env_token is None
        and env_url is None
        and url_file is not None
        and token_file is not None
        and token_file is not url_file
        and token_file.url is not None
        and token_file.url.rstrip("/") != url.rstrip("/")
    ):
        raise ClientConfigError(
            f"the token in {token_file.path} is for {token_file.url}, but "
            f"{url_file.path} points at {url}; set {ENV_TOKEN} or add [server] token "
            f"to {url_file.path}"
        )
    databases: dict[str, str | None] = {}
    for file in reversed(files):  # the stronger file's migrations_dir wins
        for name, directory in file.databases.items():
            databases[name] = directory or databases.get(name)
    return ClientConfig(
        server_url=url.rstrip("/"),
        token=token,
        url_source=url_source,
        token_source=token_source,
        warnings=_check_url(url, url_source),
        default_database=_first(f.default_database for f in files),
        default_environment=_first(f.default_environment for f in files),
        allow_insecure=bool(_first(f.allow_insecure for f in files)),
        databases=databases,
        migrations_dir=_first(f.migrations_dir for f in files),
    )


def _first(values: Iterable[_T | None]) -> _T | None:
    return next((value for value in values if value is not None), None)


def _read_client_file(path: Path, environ: Mapping[str, str]) -> _ClientFile:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ClientConfigError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ClientConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    _refuse_unknown(path, "", document, _TOP_LEVEL_KEYS)
    server = document.get("server", {})
    if not isinstance(server, dict):
        raise ClientConfigError(f"{path}: [server] must be a table")
    _refuse_unknown(path, "server.", server, _SERVER_KEYS)
    databases = document.get("databases", {})
    if not isinstance(databases, dict) or not all(
        isinstance(table, dict) for table in databases.values()
    ):
        raise ClientConfigError(f"{path}: [databases] must hold [databases.<name>] tables")
    raw: dict[str, Any] = {}
    for key in ("url", "token"):
        raw[f"server.{key}"] = _string(path, f"server.{key}", server.get(key))
    for key in ("default_database", "default_environment", "migrations_dir"):
        raw[key] = _string(path, key, document.get(key))
    for name, table in databases.items():
        _refuse_unknown(path, f"databases.{name}.", table, _DATABASE_KEYS)
        key = f"databases.{name}.migrations_dir"
        raw[key] = _string(path, key, table.get("migrations_dir"))
    allow_insecure = document.get("allow_insecure")
    if allow_insecure is not None and not isinstance(allow_insecure, bool):
        raise ClientConfigError(f"{path}: allow_insecure must be true or false")
    try:
        expanded = expand_values({k: v for k, v in raw.items() if v is not None}, environ)
    except ExpansionError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem.path)}: {problem.message}"
            for problem in exc.problems
        )
        raise ClientConfigError(f"{path}: {problems}") from exc

    def value(key: str) -> str | None:
        return (expanded.get(key) or "").strip() or None

    return _ClientFile(
        path=path,
        url=value("server.url"),
        token=value("server.token"),
        default_database=value("default_database"),
        default_environment=value("default_environment"),
        allow_insecure=allow_insecure,
        migrations_dir=value("migrations_dir"),
        databases={name: value(f"databases.{name}.migrations_dir") for name in databases},
    )


def _refuse_unknown(
    path: Path, prefix: str, table: Mapping[str, Any], known: frozenset[str]
) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ClientConfigError(
            f"{path}: unknown key {', '.join(prefix + key for key in unknown)} "
            f"(a client config takes {', '.join(prefix + key for key in sorted(known))})"
        )


def _string(path: Path, key: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ClientConfigError(f"{path}: {key} must be a string")
    return value


def _check_url(url: str, source: str) -> tuple[str, ...]:
    """Reject what cannot be a server URL; warn when the token would cross the net in clear."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ClientConfigError(
            f"invalid server URL {url!r} (from {source}): expected http(s)://host[:port]"
        )
    if parts.scheme == "http" and not is_local_host(parts.hostname):
        return (
            f"warning: the server URL {url} is plain http to a non-local host; "
            "the API token travels unencrypted (use https://)",
        )
    return ()
