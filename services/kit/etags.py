"""The one etag format of every resource (AIP-154, ADR 0016).

An etag is a strong HTTP entity tag, ``"<20 hex digits>"``: a digest of the resource's id and
version, so it changes with every change, differs between two resources at the same version,
and is the ``ETag`` header the gateway serves as it is (quotes included). Services compare a
caller's etag with :func:`etag_of` of the current row inside the transaction that changes it.
"""

from __future__ import annotations

import hashlib


def etag_of(resource_id: str, version: int) -> str:
    """``"3f2a…"``: the etag of ``resource_id`` at ``version``."""
    digest = hashlib.sha256(f"{resource_id}:{version}".encode()).hexdigest()[:20]
    return f'"{digest}"'
