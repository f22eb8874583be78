"""The analytics service: click aggregates, daily link counts, stats API,
live click stream, backfills and the operations console."""
