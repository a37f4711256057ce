"""Test helpers: build valid mainland resident IDs (GB 11643) for any birth date."""

from __future__ import annotations

import itertools
import random
from datetime import date

from hypothesis import strategies as st

from services.customer.domain import PROVINCE_CODES, id_check_char

#: One sequence per test process for people who must be unique (national ID, mobile, e-mail).
#: It lives here, not in a conftest: pytest's importlib mode loads a conftest a second time when
#: test modules import it by name, and two counters from random starts collided once in a while
#: (ALREADY_EXISTS for a "unique" person in tests/integration/customer).
serial = itertools.count(random.randrange(1_000_000))


def make_id(born: date, *, region: str = "110101", seq: int = 123) -> str:
    first17 = f"{region}{born:%Y%m%d}{seq:03d}"
    return first17 + id_check_char(first17)


@st.composite
def valid_ids(draw: st.DrawFn, today: date = date(2025, 6, 1)) -> tuple[str, date]:
    province = draw(st.sampled_from(sorted(PROVINCE_CODES)))
    rest = draw(st.integers(0, 9999))
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=today))
    seq = draw(st.integers(0, 999))
    return make_id(born, region=f"{province:02d}{rest:04d}", seq=seq), born
