"""Contract checks (``make contract`` / ``python -m devtools.contract``).

Runs, in order, and reports every step (it does not stop at the first failure):

1. ``python -m devtools.protogen``  third-party protos + generated code are current
2. ``buf lint``                      style rules of buf.yaml (docs/adr/0002-proto-style.md)
3. ``buf breaking proto --against proto/baseline/bank-v1.binpb``
                                     wire + JSON compatibility with the released baseline
4. ``pytest tests/contract``        scopes, HTTP surface vs ARCHITECTURE.md, PII marking,
                                     event registry, golden examples, breaking-check mutations

Exit status 0 only when every step passed. See docs/contracts.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = "proto/baseline/bank-v1.binpb"


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


def _step(title: str, cmd: Sequence[str]) -> bool:
    print(f"\n==> {title}\n    $ {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    code = subprocess.run(list(cmd), cwd=REPO, env=_env(), check=False).returncode
    status = "ok" if code == 0 else f"FAILED (exit {code})"
    print(f"    {status} in {time.monotonic() - started:.1f}s", flush=True)
    return code == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.contract", description="Zhongtai contract checks")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (e.g. -k events)")
    args = parser.parse_args(argv)
    buf = find_buf()
    steps = [
        ("codegen + third-party protos", [sys.executable, "-m", "devtools.protogen"]),
        ("buf lint (style)", [buf, "lint", "--error-format", "text"]),
        (
            "buf breaking (WIRE_JSON + RPC/SERVICE_NO_DELETE vs baseline)",
            [buf, "breaking", "proto", "--against", BASELINE],
        ),
        ("contract tests", [sys.executable, "-m", "pytest", "tests/contract", "-q", *args.pytest_args]),
    ]
    results: list[tuple[str, bool]] = []
    for title, cmd in steps:
        ok = _step(title, cmd)
        results.append((title, ok))
        if not ok and title.startswith("codegen"):
            break  # nothing else can run without build/proto-deps and gen/
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
