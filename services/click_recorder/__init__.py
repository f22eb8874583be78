"""The click-recorder: drains ``CLICKS`` into the ``clicks`` table, idempotently."""
