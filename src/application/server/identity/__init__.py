"""Identity use cases, one module each (`docs/server.md`: First start, API, Audit).

`authentication` (bearer token → principal), `tokens` (API tokens), `users` (user
administration), `audit_queries` (the audit API) and `bootstrap` (first-start users,
tokens and token files), over `roles` (the role catalog and group map); `issuing` and
`events` hold the token issuing and the audit events several of them share.

Every use case is a plain class taking its ports in the constructor; each state change and
its audit event commit in one store session (`Store.write()`).
"""
