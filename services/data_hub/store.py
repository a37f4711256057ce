"""The hub's storage, one module per concern; this module is their public face.

| question | module |
|---|---|
| which tables, which set serves, rebuild's truncate and version carry-over | services/data_hub/schema.py |
| timestamps and money as columns | services/data_hub/codecs.py |
| what a batch of events changes (pure) | services/data_hub/fold.py |
| loading the rows a batch touches, writing its changes | services/data_hub/facts.py |
| rendering, serving and publishing views | services/data_hub/views.py |
| RFM scores and segment listings | services/data_hub/segments.py |

New code imports the module that answers its question; the names below stay for the callers
that import them from here (the gRPC servicer, tests, benchmarks).
"""

from __future__ import annotations

from services.data_hub.codecs import micros_money, money_micros, now_us, ts_us, us_ts
from services.data_hub.facts import apply_patches
from services.data_hub.fold import BadEvent
from services.data_hub.schema import (
    SET_NAMES,
    SETS,
    Tables,
    active_tables,
    carry_versions,
    metadata,
    other,
    read_state,
    state,
    truncate,
)
from services.data_hub.segments import decode_token, encode_token, refresh_rfm, segment_counts, segment_members
from services.data_hub.served import all_docs, get_view, mark_published, pending_views, served
from services.data_hub.views import View, load_catalogue, materialize, render

__all__ = [
    "SETS",
    "SET_NAMES",
    "BadEvent",
    "Tables",
    "View",
    "active_tables",
    "all_docs",
    "apply_patches",
    "carry_versions",
    "decode_token",
    "encode_token",
    "get_view",
    "load_catalogue",
    "mark_published",
    "materialize",
    "metadata",
    "micros_money",
    "money_micros",
    "now_us",
    "other",
    "pending_views",
    "read_state",
    "refresh_rfm",
    "render",
    "segment_counts",
    "segment_members",
    "served",
    "state",
    "truncate",
    "ts_us",
    "us_ts",
]
