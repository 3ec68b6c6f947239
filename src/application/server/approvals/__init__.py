"""Human approval of pending requests: approve and reject (docs/server.md §2.4-§2.5)."""
