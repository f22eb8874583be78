"""Pieces every linkflow service shares: contracts, bus, settings, metrics, DB helpers."""
