"""Alembic environment of the gateway's own database (run by services.kit.migrations.upgrade)."""

from gateway.idempotency import METADATA
from services.kit.migrations import run_env

run_env(METADATA)
