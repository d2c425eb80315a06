"""Step kinds that runbooks are built from."""
