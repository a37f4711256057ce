"""Build the staff console (``python -m devtools.console_build``, run by ``make setup``).

The console is plain ES modules (``console/src``), no bundler: the build copies them and the
pinned npm packages they load (``console/node_modules``, installed by ``npm ci`` from
``console/package-lock.json``) into ``gateway/static/console/``, which the gateway ships as
package data and serves under ``/console/`` (gateway/console.py). Needs no network itself.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "console" / "src"
MODULES = REPO / "console" / "node_modules"
OUTPUT = REPO / "gateway" / "static" / "console"
#: npm files the page loads (and the licence texts that go with them): node_modules path → vendor/ name.
VENDOR = {
    "echarts/dist/echarts.common.min.js": "echarts.common.min.js",
    "echarts/LICENSE": "echarts.LICENSE.txt",
    "echarts/NOTICE": "echarts.NOTICE.txt",
}


def build(output: Path = OUTPUT) -> int:
    """Copy sources and vendored files into ``output`` (replaced whole); the number of files."""
    missing = [name for name in VENDOR if not (MODULES / name).is_file()]
    if missing:
        names = ", ".join(missing)
        raise SystemExit(f"console build: {names} missing: run `npm ci` in console/ (part of `make setup`)")
    staging = output.with_name(output.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(SOURCE, staging)
    (staging / "vendor").mkdir()
    for name, target in VENDOR.items():
        shutil.copyfile(MODULES / name, staging / "vendor" / target)
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    return sum(1 for p in output.rglob("*") if p.is_file())


def main() -> int:
    count = build()
    print(f"[console] {count} files into {OUTPUT.relative_to(REPO)}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
