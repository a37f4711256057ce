"""Contract checks (``make contract`` / ``python -m devtools.contract``).

Runs, in order, and reports every step (it does not stop at the first failure):

1. ``python -m devtools.protogen``  third-party protos + generated code are current
2. ``buf lint``                      style rules of buf.yaml (docs/adr/0002-proto-style.md)
3. ``buf breaking proto --against contracts/releases/<v>/proto.binpb``, for every release in
   the compatibility window (BACKWARD_TRANSITIVE): wire + JSON compatibility of RPCs and events
4. AsyncAPI: ``/asyncapi.json`` validates against the AsyncAPI 3.0.0 JSON Schema
5. REST, event and consumer gates (:mod:`devtools.contract_gates`) and the "can I deploy?"
   report per service, also written to ``build/contract-report.md``
6. ``pytest tests/contract``        scopes, HTTP surface vs ARCHITECTURE.md, PII marking,
                                     event registry, golden examples, consumer declarations
                                     vs the consumers' code, recorded events, gate mutations

Exit status 0 only when every step passed. See docs/contracts.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "build" / "contract-report.md"


def find_buf() -> str:
    candidate = Path(sys.executable).parent / "buf"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("buf")
    if found is None:
        raise SystemExit("buf CLI not found: pip install -c constraints.txt buf-bin (part of `make setup`)")
    return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO), str(REPO / "gen")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _run(title: str, cmd: Sequence[str] | Callable[[], bool]) -> bool:
    shown = (cmd.__doc__ or "").strip() if callable(cmd) else "$ " + " ".join(cmd)
    print(f"\n==> {title}\n    {shown}", flush=True)
    started = time.monotonic()
    if callable(cmd):
        try:
            ok = cmd()
        except Exception as exc:  # a tool that cannot run fails its step, the others still run
            print(f"    error: {type(exc).__name__}: {exc}")
            ok = False
        status = "ok" if ok else "FAILED"
    else:
        code = subprocess.run(list(cmd), cwd=REPO, env=_env(), check=False).returncode
        ok, status = code == 0, "ok" if code == 0 else f"FAILED (exit {code})"
    print(f"    {status} in {time.monotonic() - started:.1f}s", flush=True)
    return ok


def current_findings(all_releases: Sequence[Any], consumers_dir: Path | None = None) -> tuple[list[Any], list[Any]]:
    """Findings of the REST, event and consumer gates for the importable contracts."""
    from devtools import contract_docs, contract_gates
    from devtools.contract_tools import oasdiff_binary

    if str(REPO / "gen") not in sys.path:
        sys.path.insert(0, str(REPO / "gen"))
    window = contract_gates.window(all_releases)
    docs = contract_docs.documents()
    findings = contract_gates.rest_gate(oasdiff_binary(), window, docs["openapi.json"])
    findings += contract_gates.event_gate(window, docs["asyncapi.json"])
    findings += contract_gates.consumer_gate(window, docs["asyncapi.json"], consumers_dir or contract_gates.CONSUMERS)
    return findings, window


def check_asyncapi() -> bool:
    """validate the generated AsyncAPI document against the AsyncAPI 3.0.0 JSON Schema"""
    import jsonschema

    from devtools import contract_docs
    from devtools.contract_tools import asyncapi_schema

    errors = list(jsonschema.Draft7Validator(asyncapi_schema()).iter_errors(contract_docs.documents()["asyncapi.json"]))
    for error in errors[:20]:
        print(f"    asyncapi.json at {'/'.join(map(str, error.absolute_path))}: {error.message[:300]}")
    return not errors


def check_gates() -> bool:
    """REST (oasdiff), events (topic, key, ce_type) and consumer declarations vs the releases"""
    from devtools import contract_gates

    all_releases = contract_gates.releases()
    if not all_releases:
        print("    no release under contracts/releases: record one with make contract-release VERSION=v1.0")
        return False
    findings, window = current_findings(all_releases)
    text = contract_gates.report(findings, window)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text, encoding="utf-8")
    print("\n".join("    " + line for line in text.splitlines()))
    print(f"    (report written to {REPORT.relative_to(REPO)})")
    return not findings


def _buf_breaking_steps(buf: str) -> list[tuple[str, Sequence[str] | Callable[[], bool]]]:
    from devtools import contract_gates

    steps: list[tuple[str, Sequence[str] | Callable[[], bool]]] = []
    for release in contract_gates.window(contract_gates.releases()):
        image = (release.path / "proto.binpb").relative_to(REPO)
        cmd = [buf, "breaking", "proto", "--against", str(image), "--error-format", "text"]
        steps.append((f"buf breaking vs {release.version} (WIRE_JSON + RPC/SERVICE_NO_DELETE)", cmd))
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.contract", description="Zhongtai contract checks")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (e.g. -k events)")
    args = parser.parse_args(argv)
    buf = find_buf()
    codegen = "codegen + third-party protos"
    results = [(codegen, _run(codegen, [sys.executable, "-m", "devtools.protogen"]))]
    if results[0][1]:  # nothing else can run without build/proto-deps and gen/
        steps: list[tuple[str, Sequence[str] | Callable[[], bool]]] = [
            ("buf lint (style)", [buf, "lint", "--error-format", "text"]),
            *_buf_breaking_steps(buf),
            ("AsyncAPI 3.0 document", check_asyncapi),
            ("REST / events / consumers: can I deploy?", check_gates),
            ("contract tests", [sys.executable, "-m", "pytest", "tests/contract", "-q", *args.pytest_args]),
        ]
        for title, cmd in steps:
            results.append((title, _run(title, cmd)))
    print("\n==> summary")
    for title, ok in results:
        print(f"    {'PASS' if ok else 'FAIL'}  {title}")
    failed = [t for t, ok in results if not ok]
    if failed:
        print(f"\ncontract checks FAILED: {', '.join(failed)}")
        return 1
    print("\ncontract checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
