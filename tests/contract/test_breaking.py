"""`buf breaking` (WIRE_JSON + SERVICE/RPC_NO_DELETE) against the committed baseline image
proto/baseline/bank-v1.binpb really catches breaking changes: run it on temporary copies of
proto/ with one deliberate change each. Also `buf lint` passes and the tree is compatible."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

BASELINE = "proto/baseline/bank-v1.binpb"
CUSTOMER = "proto/bank/customer/v1/customer.proto"
PRODUCT = "proto/bank/product/v1/product.proto"


def run_buf(buf: str, workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([buf, *args], cwd=workspace, capture_output=True, text=True, timeout=120, check=False)


def breaking(buf: str, workspace: Path) -> subprocess.CompletedProcess[str]:
    return run_buf(buf, workspace, "breaking", "proto", "--against", BASELINE, "--error-format", "text")


def edit(workspace: Path, rel: str, pattern: str, replacement: str, flags: int = 0) -> None:
    path = workspace / rel
    text = path.read_text(encoding="utf-8")
    new, count = re.subn(pattern, replacement, text, count=1, flags=flags)
    assert count == 1, f"mutation pattern {pattern!r} not found in {rel}: update this test with the proto"
    path.write_text(new, encoding="utf-8")


def test_unchanged_tree_is_compatible(buf: str, proto_workspace: Path) -> None:
    result = breaking(buf, proto_workspace)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_passes(buf: str, proto_workspace: Path) -> None:
    result = run_buf(buf, proto_workspace, "lint", "--error-format", "text")
    assert result.returncode == 0, result.stdout + result.stderr


# Each mutation: (file, regex, replacement, text expected in buf's complaint).
BREAKING_CHANGES = {
    "field_deleted_without_reserved": (
        CUSTOMER,
        r"\n  bool kyc_verified = 8 \[\(google\.api\.field_behavior\) = OUTPUT_ONLY\];",
        "",
        "kyc_verified",
    ),
    "field_renumbered": (
        CUSTOMER,
        r"int64 version = 14 \[",
        "int64 version = 15 [",
        'field "14"',
    ),
    "rpc_removed": (
        PRODUCT,
        r"\n  rpc GetProduct\(GetProductRequest\) returns \(Product\) \{.*?\n  \}\n",
        "\n",
        "GetProduct",
    ),
    "field_renamed_json": (
        PRODUCT,
        r"string display_name = 2 \[",
        "string title = 2 [",
        "display_name",
    ),
    "enum_value_deleted": (
        PRODUCT,
        r"\n    TYPE_CARD = 4;",
        "",
        "TYPE_CARD",
    ),
    "field_type_changed": (
        PRODUCT,
        r"int32 term_months = 4 \[",
        "int64 term_months = 4 [",
        "term_months",
    ),
}


@pytest.mark.parametrize("change", sorted(BREAKING_CHANGES))
def test_breaking_change_is_rejected(change: str, buf: str, proto_workspace: Path) -> None:
    rel, pattern, replacement, needle = BREAKING_CHANGES[change]
    edit(proto_workspace, rel, pattern, replacement, flags=re.DOTALL)
    build = run_buf(buf, proto_workspace, "build", "proto", "-o", "/dev/null")
    assert build.returncode == 0, f"mutation {change} does not compile: {build.stderr}"
    result = breaking(buf, proto_workspace)
    assert result.returncode != 0, f"buf breaking accepted {change}:\n{result.stdout}{result.stderr}"
    assert needle in result.stdout + result.stderr


def test_field_deleted_with_reserved_is_accepted(buf: str, proto_workspace: Path) -> None:
    edit(
        proto_workspace,
        CUSTOMER,
        r"\n  bool kyc_verified = 8 \[\(google\.api\.field_behavior\) = OUTPUT_ONLY\];",
        '\n  reserved 8;\n  reserved "kyc_verified";',
    )
    result = breaking(buf, proto_workspace)
    assert result.returncode == 0, result.stdout + result.stderr


def test_adding_a_field_is_accepted(buf: str, proto_workspace: Path) -> None:
    edit(
        proto_workspace,
        PRODUCT,
        r"(string description = 7 \[\(buf\.validate\.field\)\.string\.max_len = 200\];)",
        r"\1\n  string channel = 9;",
    )
    result = breaking(buf, proto_workspace)
    assert result.returncode == 0, result.stdout + result.stderr
