"""Alembic migrations of the registry, configured programmatically by registry.db."""
