"""Alembic environment of the data hub (run by services.kit.migrations.upgrade)."""

from services.data_hub.schema import metadata
from services.kit import run_env

run_env(metadata)
