"""Prometheus metrics for Tamma as a reusable Django app."""

__version__ = "0.1.0"
