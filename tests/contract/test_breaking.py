"""`buf breaking` (WIRE_JSON + SERVICE/RPC_NO_DELETE) really catches breaking changes: each test
mutates a temporary copy of proto/ once and runs buf against an image of the *unmutated* copy
(so the self-tests never depend on the release baselines, nor collide with real evolution:
targets are read from the descriptors, new numbers are the next free ones, new names unlikely).
Also `buf lint` passes and the tree is compatible with every release in the window."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from devtools import contract_gates
from tests.contract.protoedit import UNLIKELY, ProtoFile, next_free_number

REPO = Path(__file__).resolve().parents[2]
IMAGE = "baseline.binpb"


def run_buf(buf: str, workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([buf, *args], cwd=workspace, capture_output=True, text=True, timeout=120, check=False)


def breaking(buf: str, workspace: Path, against: str = IMAGE) -> subprocess.CompletedProcess[str]:
    return run_buf(buf, workspace, "breaking", "proto", "--against", against, "--error-format", "text")


@pytest.fixture(scope="session")
def unmutated_image(release_of_today: Path) -> Path:
    """The buf image of the current, unmutated tree (recorded once per session)."""
    return release_of_today / "v0.1" / "proto.binpb"


@pytest.fixture()
def workspace(proto_workspace: Path, unmutated_image: Path) -> Path:
    """A proto workspace with the image of its unmutated self beside it."""
    shutil.copy2(unmutated_image, proto_workspace / IMAGE)
    return proto_workspace


def customer(contracts) -> Descriptor:
    return contracts.files[0].pool.FindMessageTypeByName("bank.customer.v1.Customer")


def product(contracts) -> Descriptor:
    return contracts.files[0].pool.FindMessageTypeByName("bank.product.v1.Product")


def last_field(message: Descriptor, kind: int | None = None) -> FieldDescriptor:
    fields = [f for f in message.fields if kind is None or f.type == kind]
    return max(fields, key=lambda f: f.number)


def test_current_tree_is_compatible_with_every_release(buf: str, proto_workspace: Path) -> None:
    for release in contract_gates.window(contract_gates.releases()):
        result = breaking(buf, proto_workspace, str(release.path / "proto.binpb"))
        assert result.returncode == 0, f"vs {release.version}: {result.stdout}{result.stderr}"


def test_lint_passes(buf: str, proto_workspace: Path) -> None:
    result = run_buf(buf, proto_workspace, "lint", "--error-format", "text")
    assert result.returncode == 0, result.stdout + result.stderr


def _mutate(change: str, contracts, root: Path) -> str:
    """Apply one breaking change; return the text buf's complaint must contain."""
    cust, prod = customer(contracts), product(contracts)
    field = last_field(cust)
    proto = ProtoFile(root, cust.file.name)
    if change == "field_deleted_without_reserved":
        proto.delete_field(field, reserve=False)
        needle = f'"{field.number}"'
    elif change == "field_renumbered":
        proto.edit_field(field, rf"=\s*{field.number}\b", f"= {next_free_number(cust)}")
        needle = f'"{field.number}"'
    elif change == "field_renamed_json":
        proto.edit_field(field, rf"\b{field.name}\b", f"{UNLIKELY}_renamed")
        needle = field.name
    elif change == "field_type_changed":
        target = next(f for m in [prod, *prod.nested_types] for f in m.fields if f.type == FieldDescriptor.TYPE_INT32)
        proto = ProtoFile(root, target.file.name)
        proto.edit_field(target, r"\bint32\b", "int64")
        needle = target.name
    elif change == "enum_value_deleted":
        value = max(prod.enum_types_by_name["Type"].values, key=lambda v: v.number)
        proto = ProtoFile(root, prod.file.name)
        proto.delete_enum_value(value)
        needle = value.name
    elif change == "rpc_removed":
        service = prod.file.services_by_name["ProductService"]
        proto = ProtoFile(root, prod.file.name)
        proto.delete_rpc(service.name, "GetProduct")
        needle = "GetProduct"
    else:
        raise AssertionError(change)
    proto.save()
    return needle


BREAKING_CHANGES = [
    "field_deleted_without_reserved",
    "field_renumbered",
    "field_renamed_json",
    "field_type_changed",
    "enum_value_deleted",
    "rpc_removed",
]


@pytest.mark.parametrize("change", BREAKING_CHANGES)
def test_breaking_change_is_rejected(change: str, contracts, buf: str, workspace: Path) -> None:
    needle = _mutate(change, contracts, workspace)
    result = breaking(buf, workspace)
    assert result.returncode != 0, f"buf breaking accepted {change}:\n{result.stdout}{result.stderr}"
    assert needle in result.stdout + result.stderr


def test_field_deleted_with_reserved_is_accepted(contracts, buf: str, workspace: Path) -> None:
    cust = customer(contracts)
    proto = ProtoFile(workspace, cust.file.name)
    proto.delete_field(last_field(cust), reserve=True)
    proto.save()
    result = breaking(buf, workspace)
    assert result.returncode == 0, result.stdout + result.stderr


def test_adding_a_field_with_the_next_free_number_is_accepted(contracts, buf: str, workspace: Path) -> None:
    cust = customer(contracts)
    proto = ProtoFile(workspace, cust.file.name)
    proto.add_to_message(cust, f"string {UNLIKELY}_nickname = {next_free_number(cust)};")
    proto.save()
    result = breaking(buf, workspace)
    assert result.returncode == 0, result.stdout + result.stderr
