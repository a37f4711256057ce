"""The console's consumer declaration (contracts/consumers/console.yaml) against the console's own
code: every declared response field is read by its JavaScript under the field's JSON name, every
declared RPC's route is one the console calls, every declared enum value is compared with, and
every route the console calls is declared. (The browser code is not Python, so the probe is
textual: property reads ``.name`` / ``?.name`` and route literals.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pool

from gateway.openapi import openapi_path
from gateway.routing import discover_routes, load_contracts

REPO = Path(__file__).resolve().parents[2]
DECLARATION = REPO / "contracts" / "consumers" / "console.yaml"


@pytest.fixture(scope="module")
def source() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "console" / "src").rglob("*.js")))


@pytest.fixture(scope="module")
def declaration() -> dict[str, Any]:
    load_contracts()
    return yaml.safe_load(DECLARATION.read_text(encoding="utf-8"))


def _route_literal(path: str) -> str:
    """``/v1/customers/{customerId}/view`` → the part of the JS template literal before/after the
    variables: ``/v1/customers/`` … ``/view`` (a regex)."""
    parts = [re.escape(p) for p in re.split(r"\{[^}]+\}", path)]
    return r"[^`\"']*".join(parts)


def _json_names(message: Any, dotted: str) -> list[str]:
    names, desc = [], message
    for part in dotted.split("."):
        fd = desc.fields_by_name[part]
        names.append(fd.json_name)
        desc = fd.message_type
    return names


def test_every_declared_field_is_read_by_the_console(declaration: dict[str, Any], source: str) -> None:
    pool = descriptor_pool.Default()
    unread = []
    for rpc, reads in declaration["rpcs"].items():
        response = pool.FindMessageTypeByName(reads["response"])
        for path in reads.get("fields", []):
            leaf = _json_names(response, path)[-1]
            if not re.search(rf"\??\.{leaf}\b", source):
                unread.append(f"{rpc}: {path} (.{leaf})")
    assert not unread, unread


def test_every_declared_rpc_is_called_and_every_called_route_is_declared(
    declaration: dict[str, Any], source: str
) -> None:
    routes = {
        r.full_method.lstrip("/").replace("/", "."): (r.http_method, openapi_path(r))
        for r in discover_routes(load_contracts())
    }
    declared = set(declaration["rpcs"])
    called = set()
    for rpc, (method, path) in routes.items():
        verb = {"GET": r"get\(", "POST": r"post\("}.get(method)
        if verb and re.search(verb + r"\s*[`\"']" + _route_literal(path) + r"[`\"']", source):
            called.add(rpc)
    assert declared - called == set(), f"declared but not called: {sorted(declared - called)}"
    assert called - declared == set(), f"called but not declared: {sorted(called - declared)}"


def test_every_declared_enum_value_is_compared_with(declaration: dict[str, Any], source: str) -> None:
    for values in declaration.get("enums", {}).values():
        for name in values:
            assert f'"{name}"' in source, name
