"""Fixtures and helpers local to the contract tests (tests/contract).

The contract tests are pure: they read files (protos, generated descriptors, the shared
ARCHITECTURE.md, golden JSON examples, recorded events) and run the `buf` CLI and `oasdiff` on
temporary copies of proto/ (recompiled into a temporary package when a gate must see the
mutation), and the producers' use cases on throwaway SQLite files. They need `make proto`
(gen/ and build/proto-deps/) to have run; they fail loudly otherwise.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor as _descriptor
from google.protobuf import message_factory
from google.protobuf.message import Message

REPO = Path(__file__).resolve().parents[2]
GEN = REPO / "gen"
PROTO = REPO / "proto"
DEPS = REPO / "build" / "proto-deps"
EXAMPLES = Path(__file__).resolve().parent / "examples"

OUR_PACKAGES = ("bank.api.v1", "bank.customer.v1", "bank.product.v1", "bank.datahub.v1")
TOPICS = frozenset({"bank.customer.v1", "bank.product.v1", "bank.subscription.v1", "bank.customer-view.v1"})

if not (GEN / "bank").is_dir():
    raise RuntimeError(f"{GEN}/bank missing: run `make proto` (python -m devtools.protogen) first")
if str(GEN) not in sys.path:
    sys.path.insert(0, str(GEN))


def _proto_module_names() -> list[str]:
    return sorted(".".join(p.relative_to(GEN).with_suffix("").parts) for p in (GEN / "bank").rglob("*_pb2.py"))


PB2_MODULES = [importlib.import_module(name) for name in _proto_module_names()]
FILES: list[_descriptor.FileDescriptor] = [m.DESCRIPTOR for m in PB2_MODULES]


def _walk_messages(messages: Iterable[_descriptor.Descriptor]) -> Iterator[_descriptor.Descriptor]:
    for message in messages:
        yield message
        yield from _walk_messages(message.nested_types)


def all_messages() -> list[_descriptor.Descriptor]:
    """Every message (nested ones included) declared in our bank.* packages."""
    return [m for f in FILES for m in _walk_messages(f.message_types_by_name.values())]


def all_services() -> list[_descriptor.ServiceDescriptor]:
    return [s for f in FILES for s in f.services_by_name.values()]


def all_methods() -> list[_descriptor.MethodDescriptor]:
    return [m for s in all_services() for m in s.methods]


def find_buf() -> str:
    candidate = Path(sys.executable).parent / "buf"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("buf")
    if not found:
        raise RuntimeError("buf CLI not found: pip install -c constraints.txt buf-bin")
    return found


def shared_dir() -> Path:
    """The shared design folder: $ZT_SHARED_DIR, else ../shared next to the repo root (as in CI)."""
    env = os.environ.get("ZT_SHARED_DIR")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def architecture_md() -> str:
    path = shared_dir() / "ARCHITECTURE.md"
    if not path.is_file():
        raise RuntimeError(f"{path} not found: the shared folder must sit at ../shared (or set ZT_SHARED_DIR)")
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def buf() -> str:
    return find_buf()


@pytest.fixture()
def proto_workspace(tmp_path: Path) -> Path:
    """A throwaway buf workspace: copies of buf.yaml and proto/, the real deps symlinked in."""
    if not (DEPS / "buf" / "validate" / "validate.proto").is_file():
        raise RuntimeError(f"{DEPS} is incomplete: run `make proto` (python -m devtools.protogen)")
    shutil.copy2(REPO / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(PROTO, tmp_path / "proto")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "proto-deps").symlink_to(DEPS, target_is_directory=True)
    return tmp_path


@dataclass(frozen=True)
class Contracts:
    """Descriptors of everything under proto/bank, as seen by the generated code."""

    files: list[_descriptor.FileDescriptor]
    messages: list[_descriptor.Descriptor]
    services: list[_descriptor.ServiceDescriptor]
    methods: list[_descriptor.MethodDescriptor]
    topics: frozenset[str] = TOPICS
    packages: tuple[str, ...] = OUR_PACKAGES
    options: Any = field(default=None)

    def message_class(self, full_name: str) -> type[Message]:
        desc = self.files[0].pool.FindMessageTypeByName(full_name)
        return message_factory.GetMessageClass(desc)


@pytest.fixture(scope="session")
def contracts() -> Contracts:
    from bank.api.v1 import options_pb2

    return Contracts(
        files=FILES,
        messages=all_messages(),
        services=all_services(),
        methods=all_methods(),
        options=options_pb2,
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`method` / `message` parameters run a test once per RPC / per message of our packages."""
    if "method" in metafunc.fixturenames:
        methods = all_methods()
        metafunc.parametrize("method", methods, ids=[m.full_name for m in methods])
    if "message" in metafunc.fixturenames:
        messages = all_messages()
        metafunc.parametrize("message", messages, ids=[m.full_name for m in messages])


# ------------------------------------------------------------------ mutated, recompiled copies ----
def compile_workspace(workspace: Path) -> Path:
    """Compile the (mutated) protos of a ``proto_workspace`` into ``<workspace>/gen`` (Python only)."""
    from devtools.protogen import _add_init_files, _grpc_tools_include, _protoc, bank_protos

    out = workspace / "gen"
    out.mkdir()
    protos = bank_protos(workspace / "proto")
    _protoc([f"-I{workspace / 'proto'}", f"-I{DEPS}", f"-I{_grpc_tools_include()}", f"--python_out={out}", *protos])
    _add_init_files(out)
    return out


def run_gates(gen: Path, releases: Path, consumers: Path) -> list[dict[str, str]]:
    """The REST/event/consumer findings of a compiled copy, from a fresh interpreter."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(gen), str(REPO)])
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.contract_gates", "--releases", str(releases), "--consumers", str(consumers)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def release_of_today(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release recorded from the current, unmutated tree (in a temp dir): mutations are judged
    against it, so they never depend on how far the real contracts moved since the last release."""
    from devtools.contract_release import record

    root = tmp_path_factory.mktemp("releases")
    record("v0.1", root, note="self-test baseline")
    return root
