"""Database access: the ORM models, the async engine and the schema migrations."""
