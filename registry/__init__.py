"""The expert registry: SQLAlchemy models, Alembic migrations, repository functions, the admin CLI."""
