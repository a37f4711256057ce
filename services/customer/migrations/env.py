"""Alembic environment of the customer service (run by services.kit.migrations.upgrade)."""

from services.customer.store import CustomerBase
from services.kit import run_env

run_env(CustomerBase.metadata)
