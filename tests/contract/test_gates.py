"""Mutation tests of the REST, event and consumer gates (devtools/contract_gates.py): one breaking
and one safe change per rule, each applied to a *copy* of today's documents or protos and judged
against a release recorded from today's tree in a temp dir (``release_of_today``), so real
evolution of the contracts never collides with them. Targets are picked from the documents at
test time; new names carry the ``zz_selftest`` prefix."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools import contract_docs, contract_gates
from devtools.contract_gates import Finding, Release
from devtools.contract_tools import oasdiff_binary
from tests.contract.conftest import REPO, compile_workspace, run_gates
from tests.contract.protoedit import UNLIKELY, ProtoFile, next_free_number

Doc = dict[str, Any]


@pytest.fixture(scope="session")
def today(release_of_today: Path) -> list[Release]:
    return contract_gates.releases(release_of_today)


@pytest.fixture(scope="session")
def docs() -> dict[str, Doc]:
    return contract_docs.documents()


@pytest.fixture(scope="session")
def oasdiff() -> Path:
    return oasdiff_binary()


def operations(doc: Doc) -> Iterator[tuple[str, str, Doc]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def body_schemas(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(name, schema) of every component schema used as a POST body."""
    seen = set()
    for _, m, op in operations(doc):
        ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
        if m == "post" and ref and ref not in seen:
            seen.add(ref)
            name = ref.rsplit("/", 1)[-1]
            yield name, doc["components"]["schemas"][name]


def body_schema(doc: Doc) -> tuple[str, Doc]:
    """The first POST body schema with a writable string property."""
    for name, schema in body_schemas(doc):
        if any(p.get("type") == "string" and not p.get("readOnly") for p in schema["properties"].values()):
            return name, schema
    raise AssertionError("no POST body schema with a string property")


def writable_string(schema: Doc) -> str:
    return next(k for k, p in schema["properties"].items() if p.get("type") == "string" and not p.get("readOnly"))


def rename_path_param(doc: Doc) -> None:
    path = next(p for p in doc["paths"] if "{" in p and "." not in p.split("{", 1)[1].split("}", 1)[0])
    old = path.split("{", 1)[1].split("}", 1)[0]
    ops = doc["paths"].pop(path)
    for op in ops.values():
        for param in op["parameters"]:
            if param["in"] == "path" and param["name"] == old:
                param["name"] = f"{UNLIKELY}_id"
    doc["paths"][path.replace("{" + old + "}", "{" + UNLIKELY + "_id}")] = ops


def rename_query_param(doc: Doc) -> None:
    _, _, op = next(o for o in operations(doc) if any(p["in"] == "query" for p in o[2]["parameters"]))
    param = next(p for p in op["parameters"] if p["in"] == "query")
    param["name"] = f"{UNLIKELY}{param['name']}"


def remove_response_property(doc: Doc) -> None:
    _, _, op = next(o for o in operations(doc) if o[1] == "get" and "$ref" in _ok_schema(o[2]))
    schema = doc["components"]["schemas"][_ok_schema(op)["$ref"].rsplit("/", 1)[-1]]
    schema["properties"].pop(next(reversed(schema["properties"])))


def _ok_schema(op: Doc) -> Doc:
    return op["responses"]["200"]["content"]["application/json"]["schema"]


def remove_request_enum_value(doc: Doc) -> None:
    for _, schema in body_schemas(doc):
        for prop in schema["properties"].values():
            if "enum" in prop and not prop.get("readOnly"):
                prop["enum"].pop()  # an enum narrowed inline (protovalidate `in`)
                return
            enum = doc["components"]["schemas"].get(prop.get("$ref", "").rsplit("/", 1)[-1], {})
            if "enum" in enum:
                enum["enum"].pop()
                return
    raise AssertionError("no POST body has a writable enum property")


def require_a_property(doc: Doc) -> None:
    _, schema = body_schema(doc)
    optional = [
        k for k, p in schema["properties"].items() if k not in schema.get("required", []) and not p.get("readOnly")
    ]
    schema["required"] = sorted([*schema.get("required", []), optional[0]])


def tighten_max_length(doc: Doc) -> None:
    _, schema = body_schema(doc)
    prop = schema["properties"][writable_string(schema)]
    prop["maxLength"] = max(1, prop.get("maxLength", 64) // 2)


def add_scope(doc: Doc) -> None:
    _, _, op = next(operations(doc))
    op["security"][0]["bearerAuth"].append(f"{UNLIKELY}:admin")


def add_validation_rule(doc: Doc) -> None:
    _, _, op = next(o for o in operations(doc) if o[1] == "post")
    op.setdefault("x-validation-rules", []).append(f"{UNLIKELY}: {UNLIKELY}.rule: this.size() > 0")


def add_optional_property(doc: Doc) -> None:
    _, schema = body_schema(doc)
    schema["properties"][f"{UNLIKELY}Note"] = {"type": "string"}


def add_operation(doc: Doc) -> None:
    _, _, op = next(o for o in operations(doc) if o[1] == "get")
    doc["paths"][f"/v1/{UNLIKELY}Things"] = {"get": {**copy.deepcopy(op), "operationId": f"{UNLIKELY}_list"}}


def add_response_enum_value(doc: Doc) -> None:
    enum = next(s for s in doc["components"]["schemas"].values() if "enum" in s)
    enum["enum"].append(f"{UNLIKELY.upper()}_VALUE")


def widen_max_length(doc: Doc) -> None:
    _, schema = body_schema(doc)
    prop = next((p for p in schema["properties"].values() if "maxLength" in p and not p.get("readOnly")), None)
    assert prop is not None
    prop["maxLength"] *= 2


REST_BREAKING: dict[str, tuple[Callable[[Doc], None], str]] = {
    "path parameter renamed": (rename_path_param, "api-path-removed"),
    "query parameter renamed": (rename_query_param, "request-parameter-removed"),
    "response property removed": (remove_response_property, "response-optional-property-removed"),
    "request enum value removed": (remove_request_enum_value, "enum-value-removed"),
    "request property became required": (require_a_property, "request-property-became-required"),
    "request validation tightened": (tighten_max_length, "max-length"),
    "scope added to a method": (add_scope, "api-security-scope-added"),
    "CEL rule added to a request": (add_validation_rule, "validation rule"),
}
REST_SAFE: dict[str, Callable[[Doc], None]] = {
    "new optional property": add_optional_property,
    "new operation": add_operation,
    "enum value added": add_response_enum_value,
    "request validation relaxed": widen_max_length,
}


def rest(oasdiff: Path, today: list[Release], doc: Doc) -> list[Finding]:
    return contract_gates.rest_gate(oasdiff, today, doc)


def test_unchanged_documents_pass_every_gate(oasdiff: Path, today: list[Release], docs: dict[str, Doc]) -> None:
    assert rest(oasdiff, today, docs["openapi.json"]) == []
    assert contract_gates.event_gate(today, docs["asyncapi.json"]) == []


@pytest.mark.parametrize("change", sorted(REST_BREAKING))
def test_rest_breaking_change_is_rejected(
    change: str, oasdiff: Path, today: list[Release], docs: dict[str, Doc]
) -> None:
    mutate, needle = REST_BREAKING[change]
    doc = copy.deepcopy(docs["openapi.json"])
    mutate(doc)
    findings = rest(oasdiff, today, doc)
    assert findings, f"REST gate accepted: {change}"
    assert any(needle in f.text for f in findings), [f.text for f in findings]
    assert all(f.gate == "rest" and f.release == "v0.1" for f in findings)


@pytest.mark.parametrize("change", sorted(REST_SAFE))
def test_rest_safe_change_is_accepted(change: str, oasdiff: Path, today: list[Release], docs: dict[str, Doc]) -> None:
    doc = copy.deepcopy(docs["openapi.json"])
    REST_SAFE[change](doc)
    assert rest(oasdiff, today, doc) == []


# ----------------------------------------------------------------------------------- events ----
def _messages(doc: Doc) -> Doc:
    return doc["components"]["messages"]


def first_event(doc: Doc) -> tuple[str, str]:
    """(channel id, message id) of the first event of the first channel with two or more."""
    for cid, channel in doc["channels"].items():
        if len(channel["messages"]) >= 2:
            return cid, next(iter(channel["messages"]))
    raise AssertionError("no channel with two events")


def move_event_to_other_topic(doc: Doc) -> None:
    cid, mid = first_event(doc)
    ref = doc["channels"][cid]["messages"].pop(mid)
    other = next(c for c in doc["channels"] if c != cid)
    doc["channels"][other]["messages"][mid] = ref


def change_key(doc: Doc) -> None:
    _, mid = first_event(doc)
    _messages(doc)[mid]["x-key-field"] = f"{UNLIKELY}_id"


def rename_ce_type(doc: Doc) -> None:
    _, mid = first_event(doc)
    _messages(doc)[mid]["x-ce-type"] += f"{UNLIKELY.title()}"


def remove_event(doc: Doc) -> None:
    cid, mid = first_event(doc)
    del doc["channels"][cid]["messages"][mid]


def change_cleanup_policy(doc: Doc) -> None:
    kafka = next(
        c["bindings"]["kafka"] for c in doc["channels"].values() if "topicConfiguration" not in c["bindings"]["kafka"]
    )
    kafka["topicConfiguration"] = {"cleanup.policy": ["compact"]}


def drop_header(doc: Doc) -> None:
    _, mid = first_event(doc)
    required = _messages(doc)[mid]["headers"]["required"]
    required.remove("ce_subject")


def add_event_on_new_topic(doc: Doc) -> None:
    _, mid = first_event(doc)
    message = copy.deepcopy(_messages(doc)[mid])
    new_id, topic = f"bank.{UNLIKELY}.v1.Happened", f"bank.{UNLIKELY}.v1"
    message.update({"name": "Happened", "x-ce-type": new_id})
    _messages(doc)[new_id] = message
    doc["channels"][topic] = {
        "address": topic,
        "messages": {new_id: {"$ref": f"#/components/messages/{new_id}"}},
        "bindings": {"kafka": {"topic": topic, "bindingVersion": "0.5.0"}},
    }


def add_optional_header(doc: Doc) -> None:
    _, mid = first_event(doc)
    _messages(doc)[mid]["headers"]["properties"][f"{UNLIKELY}_hint"] = {"type": "string"}


EVENT_BREAKING: dict[str, tuple[Callable[[Doc], None], str]] = {
    "event moved to another topic": (move_event_to_other_topic, "topic"),
    "key field changed": (change_key, "key field"),
    "ce_type renamed": (rename_ce_type, "is gone"),
    "event type removed": (remove_event, "is gone"),
    "topic cleanup policy changed": (change_cleanup_policy, "cleanup.policy"),
    "required header dropped": (drop_header, "no longer sends"),
}
EVENT_SAFE: dict[str, Callable[[Doc], None]] = {
    "new event type on a new topic": add_event_on_new_topic,
    "new optional header": add_optional_header,
}


@pytest.mark.parametrize("change", sorted(EVENT_BREAKING))
def test_event_breaking_change_is_rejected(change: str, today: list[Release], docs: dict[str, Doc]) -> None:
    mutate, needle = EVENT_BREAKING[change]
    doc = copy.deepcopy(docs["asyncapi.json"])
    mutate(doc)
    findings = contract_gates.event_gate(today, doc)
    assert any(needle in f.text for f in findings), [f.text for f in findings]


@pytest.mark.parametrize("change", sorted(EVENT_SAFE))
def test_event_safe_change_is_accepted(change: str, today: list[Release], docs: dict[str, Doc]) -> None:
    doc = copy.deepcopy(docs["asyncapi.json"])
    EVENT_SAFE[change](doc)
    assert contract_gates.event_gate(today, doc) == []


def _release(root: Path, version: str, asyncapi: Doc, **meta: str) -> None:
    (root / version).mkdir(parents=True)
    (root / version / "asyncapi.json").write_text(json.dumps(asyncapi), encoding="utf-8")
    (root / version / "release.json").write_text(json.dumps({"version": version, **meta}), encoding="utf-8")


def test_events_are_checked_against_every_release_in_the_window(tmp_path: Path, docs: dict[str, Doc]) -> None:
    """BACKWARD_TRANSITIVE: an event removed in v0.2 still fails against v0.1, unless v0.2
    accepted the break (which starts a new window)."""
    without = copy.deepcopy(docs["asyncapi.json"])
    remove_event(without)
    _release(tmp_path / "a", "v0.1", docs["asyncapi.json"])
    _release(tmp_path / "a", "v0.2", without)
    findings = contract_gates.event_gate(contract_gates.window(contract_gates.releases(tmp_path / "a")), without)
    assert [f.release for f in findings] == ["v0.1"]
    _release(tmp_path / "b", "v0.1", docs["asyncapi.json"])
    _release(tmp_path / "b", "v0.2", without, accepts_break="event retired with its topic's history")
    window = contract_gates.window(contract_gates.releases(tmp_path / "b"))
    assert [r.version for r in window] == ["v0.2"]
    assert contract_gates.event_gate(window, without) == []


# -------------------------------------------------------------------------------- consumers ----
def test_consumer_declarations_hold_against_todays_contracts(docs: dict[str, Doc]) -> None:
    problems = [
        (label, decl["consumer"], p)
        for label, decl in contract_gates.declarations([("current", contract_gates.CONSUMERS)])
        for p in contract_gates.check_declaration(decl, contract_gates._events(docs["asyncapi.json"]))
    ]
    assert problems == []


def test_consumer_sees_a_removed_event_and_a_moved_topic(docs: dict[str, Doc]) -> None:
    decl = {"consumer": f"{UNLIKELY}_app", "events": {}}
    events = contract_gates._events(docs["asyncapi.json"])
    gone, moved = sorted(events)[:2]
    decl["events"] = {gone: {"topic": events[gone]["topic"]}, moved: {"topic": events[moved]["topic"]}}
    now = {k: v for k, v in events.items() if k != gone}
    now[moved] = {**events[moved], "topic": f"bank.{UNLIKELY}.v1"}
    problems = [p for _, p in contract_gates.check_declaration(decl, now)]
    assert any(gone in p and "no longer published" in p for p in problems), problems
    assert any(moved in p and UNLIKELY in p for p in problems), problems


def _declared_leaf(consumer: str) -> tuple[str, str]:
    """(event type, field path) of a declared field of a customer event's snapshot."""
    decl = next(
        d for _, d in contract_gates.declarations([("c", contract_gates.CONSUMERS)]) if d["consumer"] == consumer
    )
    for ce_type, reads in decl["events"].items():
        for path in reads["fields"]:
            if path.count(".") == 1 and ce_type.startswith("bank.customer.v1."):
                return ce_type, path
    raise AssertionError("no declared snapshot field")


@pytest.fixture()
def compiled(proto_workspace: Path, release_of_today: Path) -> Callable[[Callable[[Path], None]], list[dict[str, str]]]:
    """Mutate the copied protos, compile them, run every gate against today's release."""

    def run(mutate: Callable[[Path], None]) -> list[dict[str, str]]:
        mutate(proto_workspace)
        return run_gates(compile_workspace(proto_workspace), release_of_today, contract_gates.CONSUMERS)

    return run


def _snapshot_field(contracts, path: str) -> Any:
    message = contracts.files[0].pool.FindMessageTypeByName("bank.customer.v1.CustomerSnapshot")
    return message.fields_by_name[path.split(".", 1)[1]]


def test_removing_a_field_a_consumer_reads_breaks_it_even_when_reserved(contracts, compiled) -> None:
    """buf accepts a deletion with `reserved`; the data hub's declaration does not."""
    _, path = _declared_leaf("data_hub")
    field = _snapshot_field(contracts, path)

    def mutate(root: Path) -> None:
        proto = ProtoFile(root, field.file.name)
        proto.delete_field(field, reserve=True)
        proto.save()

    findings = compiled(mutate)
    consumers = [f for f in findings if f["gate"] == "consumers"]
    assert consumers and all(f["owner"] == "customer" for f in consumers), findings
    assert any("data_hub" in f["text"] and field.name in f["text"] for f in consumers), findings


def test_removing_a_field_no_consumer_reads_is_accepted(contracts, compiled) -> None:
    declared = {
        p.split(".", 1)[1]
        for _, d in contract_gates.declarations([("c", contract_gates.CONSUMERS)])
        for reads in (d.get("events") or {}).values()
        for p in reads["fields"]
        if p.startswith("customer.")
    }
    snapshot = contracts.files[0].pool.FindMessageTypeByName("bank.customer.v1.CustomerSnapshot")
    unread = next(f for f in snapshot.fields if f.name not in declared)

    def mutate(root: Path) -> None:
        proto = ProtoFile(root, unread.file.name)
        proto.delete_field(unread, reserve=True)
        proto.save()

    assert compiled(mutate) == []


def test_a_plain_additive_change_passes_every_gate(
    contracts, proto_workspace: Path, release_of_today, buf: str
) -> None:
    """A new optional field, a new RPC with its http rule and scopes, a new event on a new topic:
    buf breaking, the REST, event and consumer gates all accept it."""
    pool = contracts.files[0].pool
    customer = pool.FindMessageTypeByName("bank.customer.v1.Customer")
    service = pool.FindServiceByName("bank.customer.v1.CustomerService")
    events_file = pool.FindMessageTypeByName("bank.customer.v1.CustomerCreated").file
    name = "".join(p.title() for p in UNLIKELY.split("_"))

    def mutate(root: Path) -> None:
        proto = ProtoFile(root, customer.file.name)
        proto.add_to_message(customer, f"string {UNLIKELY}_nickname = {next_free_number(customer)};")
        proto.add_rpc(
            service.name,
            f"""  rpc {name}Ping(GetCustomerRequest) returns (Customer) {{
    option (google.api.http) = {{get: "/v1/{name.lower()}/{{customer_id}}"}};
    option (bank.api.v1.required_scopes) = "customers:read";
  }}""",
        )
        proto.save()
        events = ProtoFile(root, events_file.name)
        events.append(
            f"""message {name}Happened {{
  option (bank.api.v1.event) = {{
    topic: "bank.{UNLIKELY.replace("_", "-")}.v1"
    key_field: "customer_id"
  }};
  string customer_id = 1;
  int64 version = 2;
  google.protobuf.Timestamp occur_time = 3;
}}"""
        )
        events.save()

    mutate(proto_workspace)
    gen = compile_workspace(proto_workspace)
    assert run_gates(gen, release_of_today, contract_gates.CONSUMERS) == []
    image = release_of_today / "v0.1" / "proto.binpb"
    result = subprocess.run([buf, "breaking", "proto", "--against", str(image)], cwd=proto_workspace,
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # not vacuous: the compiled copy's documents do carry the additions
    out = proto_workspace / "docs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(gen), str(REPO)])}
    subprocess.run([sys.executable, "-m", "devtools.contract_docs", str(out)], cwd=REPO, env=env, check=True)
    openapi, asyncapi = (json.loads((out / n).read_text()) for n in ("openapi.json", "asyncapi.json"))
    assert f"/v1/{name.lower()}/{{customerId}}" in openapi["paths"]  # (path parameters in lowerCamelCase)
    assert "zzSelftestNickname" in openapi["components"]["schemas"]["bank.customer.v1.Customer"]["properties"]
    assert f"bank.{UNLIKELY.replace('_', '-')}.v1" in asyncapi["channels"]


def test_released_declarations_are_checked_too(tmp_path: Path, docs: dict[str, Doc]) -> None:
    """A consumer still running an older release keeps its voice: its released declaration counts."""
    release = tmp_path / "v0.1"
    (release / "consumers").mkdir(parents=True)
    old = {"consumer": f"{UNLIKELY}_legacy", "events": {f"bank.customer.v1.{UNLIKELY}Event": {"fields": ["x"]}}}
    (release / "consumers" / "legacy.yaml").write_text(json.dumps(old), encoding="utf-8")
    empty = tmp_path / "none"
    empty.mkdir()
    findings = contract_gates.consumer_gate(contract_gates.releases(tmp_path), docs["asyncapi.json"], empty)
    assert [(f.release, f.owner) for f in findings] == [("v0.1", "customer")]
    shutil.rmtree(release)
