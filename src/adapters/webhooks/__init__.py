"""Webhook sends over httpx, behind the SSRF guard (docs/operations.md "Webhooks")."""
