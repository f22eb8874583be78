"""linkflow's benchmark lab, behind ``linkflow bench`` (``just bench``).

Not part of the running product: nothing in services/ or in the command's
other subcommands imports it, and ``shared/cli/main.py`` imports it only
when ``bench`` is asked for. It starts its own NATS and PostgreSQL (the
command's ``shared.cli.servers``) and measures:

- ``redirects``: the default run, the gateway's redirect against a bare ASGI
  302 (``wrk``: its load, ``placement``: which CPU each process gets), the
  redirect with PostgreSQL down, a link change's propagation, and the
  workers' drain rate (``drain``);
- ``system``: ``--system``, everything as ``linkflow up`` runs it;
- ``webhooks``: ``--webhooks``, the same with a local receiver (``receiver``):
  deliveries/s, and the spike with an endpoint on ``link.clicked`` against none;
- ``inserts``: ``--inserts``, the recorder's INSERT into a full table.

It needs only what the run install brings (``pip install -c
requirements.lock -e .``: its few HTTP calls go through ``client``, on the
standard library's ``http.client``) and, but for ``--inserts``, the ``wrk``
program on PATH, which it never installs: without it the command says so in
one line, before starting anything, and exits 1. What a service measures of
itself comes through the ``linkflow.bench`` entry points (pyproject.toml).
"""
