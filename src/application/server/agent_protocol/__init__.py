"""The server side of the agent protocol: one module per endpoint's use case.

Wire-compatible with dbward 0.2: same decisions, same status codes, same execution token
bytes. Our additions (long-poll, requested leases, late results, …) are each optional for
an old peer; each module's docstring lists its own.
"""
