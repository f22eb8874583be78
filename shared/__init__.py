"""What linkflow's services and its ``linkflow`` command share, grouped by role.

- ``shared.contracts``, ``settings``, ``db``, ``metrics``, ``errors``,
  ``backoff``, ``logs``, ``urls``: the ground floor, importable by anything.
- ``shared.jetstream``: the JetStream runtime (any service).
- ``shared.http``: serving HTTP, problem+json, health, API keys (any service).
- ``shared.cli``: the ``linkflow`` command; no service imports it.

Imports only point down: nothing here imports a service (a service hands the
command what it needs through entry points in pyproject.toml), and
``tests/unit/test_layout.py`` fails when one does.
"""
