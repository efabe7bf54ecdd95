"""Shared helpers (configuration, logging) for every package of the project."""
