"""The ``linkflow`` command and its tools: ``up`` (embedded servers and the
supervisor), ``migrate``, ``schemas``, ``dlq``, ``keys`` and ``bench``. No
service imports this package; it reaches the services only through the entry
points they declare (pyproject.toml) and as processes."""
