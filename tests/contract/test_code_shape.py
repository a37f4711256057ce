"""The platform's shape rules (issue "one platform shape"), held by a test so they stay true:
no module over 600 lines and no function over 60 in services/ and gateway/ (migrations and
generated code aside), and each capability's main.py a declaration of at most ~60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
MAX_MAIN_LINES = 65


def _sources() -> list[Path]:
    return [
        path
        for top in ("services", "gateway")
        for path in sorted((ROOT / top).rglob("*.py"))
        if "migrations" not in path.parts
    ]


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long


def test_no_function_is_over_60_lines() -> None:
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = lines
    assert not long, long


def test_each_capability_main_is_a_short_declaration() -> None:
    mains = sorted((ROOT / "services").glob("*/main.py"))
    assert {p.parent.name for p in mains} >= {"customer", "product", "data_hub"}
    long = {p.parent.name: n for p in mains if (n := len(p.read_text().splitlines())) > MAX_MAIN_LINES}
    assert not long, long
