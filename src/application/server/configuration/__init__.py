"""Read-only views of the server's configuration for clients and the CLI (docs/server.md §8.2).

Workflows, policies, roles and groups come from server.toml and change only with it (their
mutations answer 405 `config_only`); the databases view adds the agent registry.
"""
