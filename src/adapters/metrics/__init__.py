"""Prometheus metrics (`prometheus_client`) for the server and the agent, each in a
registry of its own (docs/operations.md "Metrics")."""
