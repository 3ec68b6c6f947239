"""Client configuration: where the CLI finds the server URL and token, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.config.client import ClientConfig, ClientConfigError, resolve_client_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def resolve(
    tmp_path: Path, environ: dict[str, str] | None = None, config: Path | None = None
) -> ClientConfig:
    return resolve_client_config(
        config, environ or {}, cwd=tmp_path / "project", home=tmp_path / "home"
    )


def test_config_file_expands_variables(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        '[server]\nurl = "${HOST:-https://dflt.example}/"\ntoken = "${MY_TOKEN}"\n',
    )
    resolved = resolve(tmp_path, {"MY_TOKEN": "dbw_env"}, path)
    assert (resolved.server_url, resolved.token) == ("https://dflt.example", "dbw_env")
    assert resolved.token_source == str(path)

    with pytest.raises(ClientConfigError, match=r"c\.toml: server\.token: undefined"):
        resolve(tmp_path, {}, path)


def test_dbward_config_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", '[server]\nurl = "https://a.example"\ntoken = "dbw_a"\n')
    resolved = resolve(tmp_path, {"DBWARD_CONFIG": str(path)})
    assert resolved.server_url == "https://a.example"


def test_project_file_over_global_file(tmp_path: Path) -> None:
    global_file = tmp_path / "home" / ".config" / "dbward" / "config.toml"
    write(global_file, '[server]\ntoken = "dbw_global"\n')
    write(tmp_path / "project" / "dbward.toml", '[server]\nurl = "https://team.example"\n')

    resolved = resolve(tmp_path)
    assert (resolved.server_url, resolved.token) == ("https://team.example", "dbw_global")

    # A global token configured for another server is not sent to the project's URL.
    write(global_file, '[server]\nurl = "https://mine.example"\ntoken = "dbw_global"\n')
    with pytest.raises(ClientConfigError, match=r"is for https://mine\.example"):
        resolve(tmp_path)
    assert resolve(tmp_path, {"DBWARD_TOKEN": "dbw_env"}).token == "dbw_env"


def test_global_file_alone(tmp_path: Path) -> None:
    write(
        tmp_path / "home" / ".config" / "dbward" / "config.toml",
        '[server]\nurl = "https://mine.example"\ntoken = "dbw_global"\n',
    )
    assert resolve(tmp_path).server_url == "https://mine.example"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server\n", "invalid TOML"),
        ("server = 1\n", r"\[server\] must be a table"),
        ('[server]\nurl = 5\ntoken = "t"\n', "server.url must be a string"),
        ('[server]\nurl = "ftp://x"\ntoken = "t"\n', "invalid server URL"),
        ('[server]\nurl = "https://x.example"\n', "no API token configured"),
        ('[server]\ntoken = "t"\n', "no server URL configured"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ClientConfigError, match=message):
        resolve(tmp_path, {}, path)


def test_plain_http_warns_only_off_the_local_network(tmp_path: Path) -> None:
    environ = {"DBWARD_TOKEN": "t"}
    for local in ("http://127.0.0.1:3000", "http://localhost:3000", "http://dbward.internal"):
        assert resolve(tmp_path, {**environ, "DBWARD_SERVER_URL": local}).warnings == ()
    remote = resolve(tmp_path, {**environ, "DBWARD_SERVER_URL": "http://dbward.example.com"})
    assert len(remote.warnings) == 1
    assert "unencrypted" in remote.warnings[0]
    secure = resolve(tmp_path, {**environ, "DBWARD_SERVER_URL": "https://dbward.example.com"})
    assert secure.warnings == ()
