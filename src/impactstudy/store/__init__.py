"""Store: submissions to and from the database (SQLAlchemy Core; SQLite in WAL mode by default,
PostgreSQL in production).

This stage is built by a later issue; the package marks its place in the pipeline.
"""
