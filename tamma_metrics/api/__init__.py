"""The HTTP API for Tamma's workers: event ingest and the family catalogue."""
