"""``python -m services.customer.audit verify`` when the database cannot be reached."""

from __future__ import annotations

import pytest

from devtools.stack import free_port
from services.customer import audit


def test_verify_with_the_database_down_says_not_verified_and_exits_2_not_broken(
    capsys: pytest.CaptureFixture[str],
) -> None:
    nobody = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/customer"  # refused
    assert audit.main(["verify", "--database-url", nobody]) == 2
    said = capsys.readouterr()
    assert "NOT VERIFIED: the database is unavailable" in said.err
    assert "BROKEN" not in said.err + said.out
