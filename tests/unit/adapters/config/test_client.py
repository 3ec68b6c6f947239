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


def test_database_and_environment_fall_back_on_the_file_then_the_only_database(
    tmp_path: Path,
) -> None:
    server = '[server]\nurl = "https://a.example"\ntoken = "t"\n'
    bare = resolve(tmp_path, {}, write(tmp_path / "bare.toml", server))
    with pytest.raises(ClientConfigError, match="which database"):
        bare.database(None)
    assert (bare.database("app"), bare.environment(None)) == ("app", "development")

    single = resolve(tmp_path, {}, write(tmp_path / "one.toml", server + "[databases.app]\n"))
    assert single.database(None) == "app"
    with pytest.raises(ClientConfigError, match=r"'other' is not in the client config's"):
        single.database("other")

    defaults = resolve(
        tmp_path,
        {"ENV": "staging"},
        write(
            tmp_path / "d.toml",
            'default_database = "billing"\ndefault_environment = "${ENV}"\n'
            "[databases.app]\n[databases.billing]\n" + server,
        ),
    )
    assert (defaults.database(None), defaults.environment(None)) == ("billing", "staging")
    assert (defaults.database("app"), defaults.environment("production")) == ("app", "production")


def test_migrations_dir_per_database_then_global_then_migrations(tmp_path: Path) -> None:
    config = resolve(
        tmp_path,
        {},
        write(
            tmp_path / "m.toml",
            'migrations_dir = "db"\n[server]\nurl = "https://a.example"\ntoken = "t"\n'
            '[databases.app]\nmigrations_dir = "app/migrations"\n[databases.other]\n',
        ),
    )
    assert config.migrations_directory(None, "app") == Path("app/migrations")
    assert config.migrations_directory(None, "other") == Path("db")
    assert config.migrations_directory(Path("x"), "app") == Path("x")


def test_merge_global_puts_the_explicit_file_over_the_global_one(tmp_path: Path) -> None:
    write(
        tmp_path / "home" / ".config" / "dbward" / "config.toml",
        'allow_insecure = true\ndefault_environment = "staging"\n'
        '[server]\nurl = "https://a.example"\ntoken = "dbw_global"\n',
    )
    explicit = write(tmp_path / "c.toml", 'default_database = "app"\n')
    with pytest.raises(ClientConfigError, match="no server configured"):
        resolve(tmp_path, {}, explicit)
    merged = resolve_client_config(
        explicit, {}, cwd=tmp_path / "project", home=tmp_path / "home", merge_global=True
    )
    assert (merged.server_url, merged.token) == ("https://a.example", "dbw_global")
    assert (merged.database(None), merged.environment(None)) == ("app", "staging")


def test_allow_insecure_in_the_file(tmp_path: Path) -> None:
    text = '[server]\nurl = "http://db.example.com"\ntoken = "t"\n'
    assert resolve(tmp_path, {}, write(tmp_path / "a.toml", text)).allow_insecure is False
    config = resolve(tmp_path, {}, write(tmp_path / "b.toml", "allow_insecure = true\n" + text))
    assert config.allow_insecure is True
    assert config.warnings  # the caller decides to stay silent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('colour = "red"\n', "unknown key colour"),
        ('[server]\nurl = "https://x"\ntoken = "t"\nport = 1\n', "unknown key server.port"),
        ("[databases.app]\nurl = 1\n", "unknown key databases.app.url"),
        ("[results]\ndir = 1\n", "unknown key results"),
        ('allow_insecure = "yes"\n', "allow_insecure must be true or false"),
        ("default_database = 3\n", "default_database must be a string"),
    ],
)
def test_unknown_keys_are_refused_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "k.toml", text)
    with pytest.raises(ClientConfigError, match=rf"k\.toml: {message}"):
        resolve(tmp_path, {"DBWARD_SERVER_URL": "https://x", "DBWARD_TOKEN": "t"}, path)
