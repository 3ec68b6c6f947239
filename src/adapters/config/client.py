"""The CLI's client configuration: which server to call and with which token
(docs/server.md §8.3).

Server URL and token, strongest first:

1. `DBWARD_SERVER_URL` / `DBWARD_TOKEN`, each on its own;
2. the file named by `--config PATH` (or `DBWARD_CONFIG`), used on its own;
3. otherwise `./dbward.toml` (project) over `~/.config/dbward/config.toml` (global), key by key.

A client file holds `[server] url, token`; `${VAR}` / `${VAR:-default}` expand inside them with
the agent config's shell semantics. A global token is never sent to a URL set by a project
file when the global file names a different server: a repository's `dbward.toml` must not be
able to collect the token a user keeps for another server.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from adapters.config.agent import is_local_host
from adapters.config.env_expansion import ExpansionError, expand_values

ENV_SERVER_URL = "DBWARD_SERVER_URL"
ENV_TOKEN = "DBWARD_TOKEN"  # noqa: S105 - the variable's name, not a token
ENV_CONFIG = "DBWARD_CONFIG"
PROJECT_CONFIG_NAME = "dbward.toml"
GLOBAL_CONFIG_PATH = Path(".config") / "dbward" / "config.toml"  # under the home directory
NO_SERVER_CONFIGURED = (
    "no server configured: set DBWARD_SERVER_URL and DBWARD_TOKEN, or pass --config"
)


class ClientConfigError(Exception):
    """The client configuration cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class ClientConfig:
    """Where to send API calls and with which token; sources name where each came from."""

    server_url: str
    token: str = field(repr=False)
    url_source: str = ""
    token_source: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _ClientServerSection:
    """`[server] url, token` of one client file, expanded; empty strings count as unset."""

    path: Path
    url: str | None
    token: str | None


def resolve_client_config(
    config_path: Path | None,
    environ: Mapping[str, str],
    *,
    cwd: Path,
    home: Path | None,
) -> ClientConfig:
    """Resolve the server URL and token (precedence in the module docstring)."""
    env_url = (environ.get(ENV_SERVER_URL) or "").strip() or None
    env_token = (environ.get(ENV_TOKEN) or "").strip() or None

    explicit = config_path
    explicit_origin = "--config"
    if explicit is None and environ.get(ENV_CONFIG):
        explicit, explicit_origin = Path(environ[ENV_CONFIG]), ENV_CONFIG
    sections: list[_ClientServerSection] = []
    if explicit is not None:
        path = explicit if explicit.is_absolute() else cwd / explicit
        if not path.is_file():
            raise ClientConfigError(f"config file not found: {path} (from {explicit_origin})")
        sections.append(_read_server_section(path, environ))
    elif env_url is None or env_token is None:
        candidates = [cwd / PROJECT_CONFIG_NAME]
        if home is not None:
            candidates.append(home / GLOBAL_CONFIG_PATH)
        sections.extend(_read_server_section(p, environ) for p in candidates if p.is_file())

    url_section = next((s for s in sections if s.url is not None), None)
    token_section = next((s for s in sections if s.token is not None), None)
    url = env_url or (url_section.url if url_section else None)
    token = env_token or (token_section.token if token_section else None)
    if url is None and token is None:
        raise ClientConfigError(NO_SERVER_CONFIGURED)
    searched = ", ".join(str(s.path) for s in sections) or "no config file found"
    if url is None:
        raise ClientConfigError(
            f"no server URL configured: set {ENV_SERVER_URL}, or [server] url ({searched})"
        )
    if token is None:
        raise ClientConfigError(
            f"no API token configured: set {ENV_TOKEN}, or [server] token ({searched})"
        )
    url_source = ENV_SERVER_URL if env_url else str(url_section.path if url_section else "")
    token_source = ENV_TOKEN if env_token else str(token_section.path if token_section else "")

    if (
        env_token is None
        and env_url is None
        and url_section is not None
        and token_section is not None
        and token_section is not url_section
        and token_section.url is not None
        and token_section.url.rstrip("/") != url.rstrip("/")
    ):
        raise ClientConfigError(
            f"the token in {token_section.path} is for {token_section.url}, but "
            f"{url_section.path} points at {url}; set {ENV_TOKEN} or add [server] token "
            f"to {url_section.path}"
        )
    return ClientConfig(
        server_url=url.rstrip("/"),
        token=token,
        url_source=url_source,
        token_source=token_source,
        warnings=_check_url(url, url_source),
    )


def _read_server_section(path: Path, environ: Mapping[str, str]) -> _ClientServerSection:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ClientConfigError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ClientConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    server = document.get("server", {})
    if not isinstance(server, dict):
        raise ClientConfigError(f"{path}: [server] must be a table")
    raw: dict[str, Any] = {}
    for key in ("url", "token"):
        if key in server:
            if not isinstance(server[key], str):
                raise ClientConfigError(f"{path}: server.{key} must be a string")
            raw[key] = server[key]
    try:
        expanded = expand_values(raw, environ)
    except ExpansionError as exc:
        problems = "; ".join(
            f"server.{'.'.join(str(part) for part in problem.path)}: {problem.message}"
            for problem in exc.problems
        )
        raise ClientConfigError(f"{path}: {problems}") from exc
    return _ClientServerSection(
        path=path,
        url=(expanded.get("url") or "").strip() or None,
        token=(expanded.get("token") or "").strip() or None,
    )


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
