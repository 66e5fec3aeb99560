"""SQLAlchemy 2.0 models and the only functions that touch the database."""
