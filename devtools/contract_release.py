"""``make contract-release VERSION=v1.x [BREAK="why"] [NOTE="..."]``: record a release's baselines.

Writes ``contracts/releases/<VERSION>/``:

- ``proto.binpb``     the buf image of ``proto/`` (third-party imports included, no source info)
- ``openapi.json``    the REST contract view (:func:`devtools.contract_docs.openapi_view`)
- ``asyncapi.json``   the event contract (``/asyncapi.json``)
- ``consumers/``      a copy of every consumer declaration (``contracts/consumers/*.yaml``)
- ``release.json``    version, UTC time, git commit, note, and ``accepts_break`` when given

Earlier releases stay: the transitive checks read all of them. A release is refused while the
current contracts break the releases they must stay compatible with, unless ``--accepts-break``
says why (that release then starts a new compatibility window, see docs/contracts.md).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from devtools import contract_docs, contract_gates
from devtools.contract import REPO, current_findings, find_buf

_VERSION = re.compile(r"^v[0-9]+\.[0-9]+(\.[0-9]+)?$")


def _git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "proto", "contracts/consumers"], cwd=REPO,
                           capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return proc.stdout.strip() + (" (+ uncommitted contract changes)" if dirty else "")


def record(version: str, dest_root: Path, *, note: str = "", accepts_break: str = "") -> Path:
    """Write the baselines of ``version`` into ``dest_root/version`` (replacing it atomically)."""
    dest_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_root, prefix=f".{version}-") as tmp:
        out = Path(tmp)
        proc = subprocess.run(
            [find_buf(), "build", "proto", "--exclude-source-info", "-o", str(out / "proto.binpb")],
            cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"buf build failed:\n{proc.stderr}")
        for name, doc in contract_docs.documents().items():
            (out / name).write_text(contract_docs.dump(doc), encoding="utf-8")
        (out / "consumers").mkdir()
        for path in sorted(contract_gates.CONSUMERS.glob("*.yaml")):
            shutil.copy2(path, out / "consumers" / path.name)
        meta = {"version": version, "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "commit": _git_commit(), "note": note}  # fmt: skip
        if accepts_break:
            meta["accepts_break"] = accepts_break
        (out / "release.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        target = dest_root / version
        if target.exists():
            shutil.rmtree(target)
        out.chmod(0o755)  # (a temporary directory is private)
        out.rename(target)
        out.mkdir()  # TemporaryDirectory cleans up its (now empty) name
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.contract_release", description=__doc__.splitlines()[0])
    parser.add_argument("version", help="release name, e.g. v1.1")
    parser.add_argument("--note", default="", help="what the release contains (kept in release.json)")
    parser.add_argument("--accepts-break", default="", help="why breaking changes are accepted in this release")
    parser.add_argument("--force", action="store_true", help="re-record an existing release")
    args = parser.parse_args(argv)
    if not _VERSION.match(args.version):
        parser.error(f"VERSION must look like v1.2 or v1.2.3, not {args.version!r}")
    existing = contract_gates.releases()
    if any(r.version == args.version for r in existing) and not args.force:
        parser.error(f"release {args.version} exists; re-record it with --force (make ... FORCE=1)")
    others = [r for r in existing if r.version != args.version]
    findings, window = current_findings(others)
    if findings and not args.accepts_break:
        print(contract_gates.report(findings, window))
        print(f"refusing to record {args.version}: the changes above break earlier releases.\n"
              'Fix them, or accept the break on purpose: make contract-release VERSION=... BREAK="why"')  # fmt: skip
        return 1
    target = record(args.version, contract_gates.RELEASES, note=args.note, accepts_break=args.accepts_break)
    print(f"recorded release {args.version} into {target.relative_to(REPO)}")
    if findings:
        print(f"accepted break: {args.accepts_break} ({len(findings)} breaking changes vs earlier releases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
