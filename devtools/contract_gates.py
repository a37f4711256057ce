"""The gates of ``make contract`` beyond ``buf``: REST, events, consumers, and the "can I deploy" report.

Every gate compares the *current* contracts (the importable generated code, rendered by
:mod:`devtools.contract_docs`) with the committed release baselines in
``contracts/releases/<version>/`` (see :mod:`devtools.contract_release`):

- **REST** — ``oasdiff breaking`` of each release's ``openapi.json`` against the current one,
  failing on WARN and ERR (severity overrides below), plus the CEL rules of each operation's
  request (``x-validation-rules``): a rule added or changed rejects requests that passed before.
- **events** — each release's ``asyncapi.json`` against the current one: every event type
  (``ce_type``) still exists, on the same topic, with the same key field, content type and
  topic clean-up policy, sending at least the headers it sent. (Payload compatibility is ``buf
  breaking`` against each release's ``proto.binpb``, run by :mod:`devtools.contract`.)
- **consumers** — every consumer declaration (``contracts/consumers/*.yaml`` and those of the
  releases) against the current contracts: each event type, topic, key, field path, enum value
  (name and number) and RPC response field a consumer reads is still there.

"Every release" means every release since the newest one that accepted a break (its
``release.json`` has ``"accepts_break": "<why>"``): BACKWARD_TRANSITIVE within that window.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor

from gateway.asyncapi import PRODUCERS

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = REPO / "contracts"
RELEASES = CONTRACTS / "releases"
CONSUMERS = CONTRACTS / "consumers"

_REQUEST_RULE_CHECKS = (
    "max-increased", "max-unset", "min-decreased", "min-unset", "max-length-increased", "max-length-unset",
    "min-length-decreased", "min-length-unset", "max-items-increased", "max-items-unset", "min-items-decreased",
    "min-items-unset", "pattern-changed", "pattern-removed", "became-optional",
)  # fmt: skip
# oasdiff severities, adjusted to proto3 JSON channel apps (fail on WARN and above):
OASDIFF_LEVELS = {
    # proto3 JSON omits default values, so every response property is optional in the schema,
    # yet channel apps read them: removing one breaks them.
    "response-optional-property-removed": "ERR",
    # AIP-126: enums are open, clients must accept values they do not know; a new value is additive.
    "response-property-enum-value-added": "INFO",
    "response-mediatype-enum-value-added": "INFO",
    # The bounds, patterns and `required` lists of the contract view are protovalidate *request*
    # rules (devtools/contract_docs.py); the schemas are shared with responses, which are never
    # validated against them (and proto3 JSON omits default values anyway). Relaxing a request
    # rule is not a response change.
    **dict.fromkeys((f"response-property-{rule}" for rule in _REQUEST_RULE_CHECKS), "INFO"),
}
# Producer of each proto package: who answers "can I deploy?" for a contract element (the same
# table names the producers in the AsyncAPI document).
OWNERS = PRODUCERS


@dataclass(frozen=True)
class Finding:
    """One breaking change: which gate, which release it breaks, which service owns it, what."""

    gate: str
    release: str
    owner: str
    text: str


@dataclass
class Release:
    version: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def doc(self, name: str) -> dict[str, Any]:
        return json.loads((self.path / name).read_text(encoding="utf-8"))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split(".") if p.isdigit())


def releases(root: Path = RELEASES) -> list[Release]:
    """Every committed release, oldest first."""
    found = []
    for path in root.glob("v*"):
        meta_path = path / "release.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        found.append(Release(path.name, path, meta))
    return sorted(found, key=lambda r: _version_key(r.version))


def window(all_releases: Sequence[Release]) -> list[Release]:
    """The releases a change must stay compatible with: from the newest accepted break on."""
    start = 0
    for i, release in enumerate(all_releases):
        if release.meta.get("accepts_break"):
            start = i
    return list(all_releases[start:])


def owner_of(full_name: str) -> str:
    for package, owner in OWNERS.items():
        if full_name.startswith(package + ".") or full_name.startswith("/" + package + "."):
            return owner
    return "gateway"


# ------------------------------------------------------------------------------------ REST ----
def _oasdiff(oasdiff: Path, base: dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="zt-oasdiff-") as tmp:
        paths = {name: Path(tmp) / f"{name}.json" for name in ("base", "current")}
        paths["base"].write_text(json.dumps(base), encoding="utf-8")
        paths["current"].write_text(json.dumps(current), encoding="utf-8")
        levels = Path(tmp) / "levels.txt"
        levels.write_text("".join(f"{k} {v}\n" for k, v in OASDIFF_LEVELS.items()), encoding="utf-8")
        proc = subprocess.run(
            [str(oasdiff), "breaking", str(paths["base"]), str(paths["current"]), "--format", "json",
             "--include-path-params", "--severity-levels", str(levels)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"oasdiff failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return [c for c in json.loads(proc.stdout or "[]") if c.get("level", 0) >= 2]


def _grpc_method(doc: dict[str, Any], path: str, method: str) -> str:
    operation = doc.get("paths", {}).get(path, {}).get(method.lower(), {})
    return str(operation.get("x-grpc-method", ""))


def _cel_changes(base: dict[str, Any], current: dict[str, Any], release: str) -> list[Finding]:
    out = []
    for path, operations in base.get("paths", {}).items():
        for method, operation in operations.items():
            now = current.get("paths", {}).get(path, {}).get(method)
            if not isinstance(now, dict):
                continue  # a removed operation is oasdiff's finding
            added = sorted(set(now.get("x-validation-rules", [])) - set(operation.get("x-validation-rules", [])))
            for rule in added:
                out.append(Finding("rest", release, owner_of(operation.get("x-grpc-method", "")),
                                   f"{method.upper()} {path}: new or changed validation rule {rule}"))  # fmt: skip
    return out


def rest_gate(oasdiff: Path, window_releases: Sequence[Release], current: dict[str, Any]) -> list[Finding]:
    findings: list[Finding] = []
    for release in window_releases:
        base = release.doc("openapi.json")
        for change in _oasdiff(oasdiff, base, current):
            path, op = change.get("path", ""), change.get("operation", "")
            grpc = _grpc_method(base, path, op) or _grpc_method(current, path, op)
            text = f"[{change['id']}] {op} {path}: {change['text']}".replace("`", "'")
            findings.append(Finding("rest", release.version, owner_of(grpc), text))
        findings.extend(_cel_changes(base, current, release.version))
    return findings


# ---------------------------------------------------------------------------------- events ----
def _events(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """ce_type → {topic, key, content_type, headers, cleanup}, from an AsyncAPI document."""
    out: dict[str, dict[str, Any]] = {}
    for channel in doc.get("channels", {}).values():
        kafka = channel.get("bindings", {}).get("kafka", {})
        cleanup = kafka.get("topicConfiguration", {}).get("cleanup.policy", ["delete"])
        for ref in channel.get("messages", {}).values():
            message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]
            out[message["x-ce-type"]] = {
                "topic": channel["address"],
                "key": message.get("x-key-field"),
                "content_type": message.get("contentType", doc.get("defaultContentType")),
                "headers": set(message.get("headers", {}).get("required", [])),
                "cleanup": sorted(cleanup),
            }
    return out


def event_gate(window_releases: Sequence[Release], current: dict[str, Any]) -> list[Finding]:
    now = _events(current)
    findings = []
    for release in window_releases:
        for ce_type, before in sorted(_events(release.doc("asyncapi.json")).items()):
            owner = owner_of(ce_type)
            after = now.get(ce_type)
            if after is None:
                findings.append(Finding("events", release.version, owner,
                                        f"event type {ce_type} is gone (removed, or its ce_type renamed)"))  # fmt: skip
                continue
            for attr, label in (("topic", "topic"), ("key", "key field"), ("content_type", "content type"),
                                ("cleanup", "topic cleanup.policy")):  # fmt: skip
                if before[attr] != after[attr]:
                    findings.append(Finding("events", release.version, owner,
                                            f"{ce_type}: {label} {before[attr]!r} -> {after[attr]!r}"))  # fmt: skip
            dropped = sorted(before["headers"] - after["headers"])
            if dropped:
                findings.append(Finding("events", release.version, owner, f"{ce_type}: no longer sends {dropped}"))
    return findings


# ------------------------------------------------------------------------------- consumers ----
def declarations(roots: Iterable[tuple[str, Path]]) -> list[tuple[str, dict[str, Any]]]:
    """(where, declaration) of every consumer file under the given (label, folder) pairs."""
    out = []
    for label, root in roots:
        for path in sorted(root.glob("*.yaml")):
            out.append((label, yaml.safe_load(path.read_text(encoding="utf-8"))))
    return out


def _resolve(message: Descriptor, dotted: str) -> str | None:
    """None when ``dotted`` resolves in ``message``; else what is missing."""
    desc: Descriptor | None = message
    for part in dotted.split("."):
        if desc is None:
            return f"{dotted} walks into a scalar at {part!r}"
        fd = desc.fields_by_name.get(part)
        if fd is None:
            return f"field {desc.full_name}.{part} is gone"
        desc = fd.message_type
    return None


def _message(pool: Any, name: str) -> Descriptor | None:
    try:
        return pool.FindMessageTypeByName(name)
    except KeyError:
        return None


def check_declaration(
    decl: dict[str, Any], events: dict[str, dict[str, Any]], pool: Any = None
) -> list[tuple[str, str]]:
    """(owner, problem) for everything ``decl`` reads that the current contracts no longer offer."""
    pool = pool or descriptor_pool.Default()
    consumer = decl["consumer"]
    problems: list[tuple[str, str]] = []
    for ce_type, reads in (decl.get("events") or {}).items():
        owner, event = owner_of(ce_type), events.get(ce_type)
        if event is None:
            problems.append((owner, f"{consumer} reads event {ce_type}, which is no longer published"))
            continue
        for attr in ("topic", "key"):
            if reads.get(attr) and reads[attr] != event[attr]:
                problems.append((owner, f"{consumer} reads {ce_type} from {attr} {reads[attr]!r}, now {event[attr]!r}"))
        message = _message(pool, ce_type)
        for path in reads.get("fields", []):
            missing = _resolve(message, path) if message is not None else f"message {ce_type} is gone"
            if missing:
                problems.append((owner, f"{consumer} reads {ce_type}.{path}: {missing}"))
    for enum_name, values in (decl.get("enums") or {}).items():
        owner = owner_of(enum_name)
        try:
            enum = pool.FindEnumTypeByName(enum_name)
        except KeyError:
            problems.append((owner, f"{consumer} reads enum {enum_name}, which is gone"))
            continue
        for name, number in values.items():
            value = enum.values_by_name.get(name)
            if value is None or value.number != number:
                now = "gone" if value is None else f"now number {value.number}"
                problems.append((owner, f"{consumer} reads {enum_name}.{name} = {number}: {now}"))
    for rpc, reads in (decl.get("rpcs") or {}).items():
        owner = owner_of(rpc)
        service_name, _, method_name = rpc.rpartition(".")
        try:
            method = pool.FindServiceByName(service_name).methods_by_name[method_name]
        except KeyError:
            problems.append((owner, f"{consumer} calls {rpc}, which is gone"))
            continue
        if method.output_type.full_name != reads.get("response", method.output_type.full_name):
            problems.append(
                (owner, f"{consumer} reads {rpc} as {reads['response']}, now {method.output_type.full_name}")
            )
            continue
        for path in reads.get("fields", []):
            missing = _resolve(method.output_type, path)
            if missing:
                problems.append((owner, f"{consumer} reads {rpc} response {path}: {missing}"))
    return problems


def consumer_gate(
    window_releases: Sequence[Release], current_asyncapi: dict[str, Any], consumers_dir: Path = CONSUMERS
) -> list[Finding]:
    roots = [("current", consumers_dir)] + [(r.version, r.path / "consumers") for r in window_releases]
    events = _events(current_asyncapi)
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for label, decl in declarations(roots):
        for owner, problem in check_declaration(decl, events):
            if (owner, problem) not in seen:
                seen.add((owner, problem))
                findings.append(Finding("consumers", label, owner, problem))
    return findings


# ---------------------------------------------------------------------------------- report ----
def consumers_of(roots: Iterable[tuple[str, Path]]) -> dict[str, set[str]]:
    """owner service → the consumers whose declarations read something it produces."""
    out: dict[str, set[str]] = {}
    for _, decl in declarations(roots):
        for name in [*(decl.get("events") or {}), *(decl.get("enums") or {}), *(decl.get("rpcs") or {})]:
            out.setdefault(owner_of(name), set()).add(decl["consumer"])
    return out


def report(findings: Sequence[Finding], window_releases: Sequence[Release], consumers_dir: Path = CONSUMERS) -> str:
    """The "can I deploy?" answer per service, then every finding."""
    versions = ", ".join(r.version for r in window_releases) or "(none)"
    readers = consumers_of([("current", consumers_dir)])
    lines = [f"can I deploy? (checked against releases {versions})", "",
             "| service | REST (channel apps) | events (replay) | consumers | can I deploy? |",
             "|---|---|---|---|---|"]  # fmt: skip
    for service in [*sorted(set(OWNERS.values())), "gateway"]:
        mine = [f for f in findings if f.owner == service]
        cells = []
        for gate in ("rest", "events", "consumers"):
            count = sum(1 for f in mine if f.gate == gate)
            cells.append("ok" if count == 0 else f"{count} breaking")
        who = ", ".join(sorted(readers.get(service, set()))) or "none declared"
        cells[2] = f"{cells[2]} ({who})"
        lines.append(f"| {service} | {' | '.join(cells)} | {'yes' if not mine else '**NO**'} |")
    if findings:
        lines += ["", "breaking changes:"]
        lines += [f"- [{f.gate} vs {f.release}] {f.owner}: {f.text}" for f in findings]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devtools.contract_gates [--releases DIR] [--consumers DIR]``: the findings of the
    importable contracts as JSON (the mutation tests run it on freshly compiled, mutated copies)."""
    import argparse

    from devtools.contract import current_findings

    parser = argparse.ArgumentParser(prog="python -m devtools.contract_gates")
    parser.add_argument("--releases", type=Path, default=RELEASES)
    parser.add_argument("--consumers", type=Path, default=CONSUMERS)
    args = parser.parse_args(argv)
    findings, _ = current_findings(releases(args.releases), consumers_dir=args.consumers)
    print(json.dumps([dataclasses.asdict(f) for f in findings], indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
