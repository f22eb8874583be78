"""The cache-refresher: applies link changes to KV ``links`` and repairs drift."""
