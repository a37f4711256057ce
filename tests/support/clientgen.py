"""Clients generated from the gateway's /openapi.json by well-known generators, as a channel-app
developer would: openapi-python-client (PyPI, pinned in constraints.txt) and openapi-typescript
(npm, pinned by tests/support/openapi_clients/package-lock.json, installed with ``npm ci`` into
``~/.cache/zhongtai/npm/<lock hash>``, reused while the lock file is unchanged).

Both fail loudly: a generator warning about the document is a test failure, and a missing
node/npm says how to get it (.ci/run installs Debian's nodejs + npm when they are absent).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

NPM_DIR = Path(__file__).parent / "openapi_clients"
CACHE = Path(os.environ.get("ZT_CACHE_DIR", Path.home() / ".cache" / "zhongtai")) / "npm"


def python_client(document: dict[str, Any], out: Path, package: str = "zt_client") -> Path:
    """Generate the Python client package ``package`` under ``out``; return the folder to put on sys.path."""
    spec = out / "openapi.json"
    spec.write_text(json.dumps(document))
    config = out / "config.yaml"
    config.write_text(f"post_hooks: []\npackage_name_override: {package}\n")
    tool = Path(sys.executable).with_name("openapi-python-client")
    result = subprocess.run(
        [str(tool), "generate", "--path", str(spec), "--meta", "none", "--output-path", str(out / package),
         "--config", str(config)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output, f"openapi-python-client warned about the document:\n{output}"
    return out


def _npm_tools() -> Path:
    """node_modules/.bin of the pinned generators (``npm ci`` once per lock file)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise RuntimeError("node and npm are required for the TypeScript client test: apt-get install -y nodejs npm")
    lock = (NPM_DIR / "package-lock.json").read_bytes()
    home = CACHE / hashlib.sha256(lock).hexdigest()[:16]
    bin_dir = home / "node_modules" / ".bin"
    if not (bin_dir / "openapi-typescript").exists() or not (bin_dir / "tsc").exists():
        home.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(NPM_DIR / name, home / name)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=home, check=True, timeout=600,
        )  # fmt: skip
    return bin_dir


def typescript_client(document: dict[str, Any], out: Path, usage: str) -> str:
    """Generate ``schema.d.ts`` with openapi-typescript, then type-check ``usage`` (a TypeScript
    module importing it) with tsc; return the generated declarations."""
    bin_dir = _npm_tools()
    spec = out / "openapi.json"
    spec.write_text(json.dumps(document))
    result = subprocess.run(
        [str(bin_dir / "openapi-typescript"), str(spec), "--output", str(out / "schema.d.ts")],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (out / "usage.ts").write_text(usage)
    check = subprocess.run(
        [str(bin_dir / "tsc"), "--noEmit", "--strict", "--target", "es2022", "--module", "es2022",
         "--moduleResolution", "bundler", str(out / "usage.ts")],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    return (out / "schema.d.ts").read_text()
