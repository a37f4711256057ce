"""Alembic environment of the product service (run by services.kit.migrations.upgrade)."""

from services.kit import run_env
from services.product.replica import CustomerEligibilityRow  # noqa: F401 - its table, in the metadata
from services.product.store import ProductBase

run_env(ProductBase.metadata)
