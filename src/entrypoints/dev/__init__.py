"""`dbward dev`: a local server, agent and PostgreSQL, and the guided demo of `make run`."""
