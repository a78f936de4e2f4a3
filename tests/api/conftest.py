"""The PostgreSQL fixtures the API tests use (a live serve on each store)."""

from tests.pg import postgres_cluster, postgres_template, postgres_url  # noqa: F401
