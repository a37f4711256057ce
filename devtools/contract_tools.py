"""External tools of the contract checks, fetched once and cached (nothing by hand).

- ``oasdiff`` (OpenAPI breaking-change diff), built with ``go install`` from the Go module proxy
  into ``~/.cache/zhongtai/bin`` like ``helm`` (``devtools/chart.py``), pinned below.
- the AsyncAPI JSON Schemas, from the npm package ``@asyncapi/specs`` pinned by
  ``devtools/asyncapi-specs/package-lock.json`` and installed with ``npm ci --ignore-scripts``
  into ``~/.cache/zhongtai/npm/``; ``/asyncapi.json`` is validated against them with jsonschema.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.chart import cache_bin_dir

REPO = Path(__file__).resolve().parents[1]
OASDIFF_MODULE = "github.com/oasdiff/oasdiff"
OASDIFF_VERSION = "v1.39.0"
ASYNCAPI_SPECS_DIR = REPO / "devtools" / "asyncapi-specs"
ASYNCAPI_SCHEMA = "3.0.0-without-$id.json"


class ToolError(Exception):
    """A tool could not be obtained; the message says how to fix it."""


def _find(name: str, candidates: tuple[str, ...]) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ToolError(f"`{name}` is needed once to fetch a contract tool and is not installed (see docs/contracts.md)")


def _oasdiff_version(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return "v" + out.stdout.strip().rsplit(" ", 1)[-1]


def oasdiff_binary(*, log: Any = print) -> Path:
    """The cached oasdiff, built with ``go install`` the first time (~1 min)."""
    binary = cache_bin_dir() / "oasdiff"
    if binary.exists() and _oasdiff_version(binary) == OASDIFF_VERSION:
        return binary
    go = _find("go", ("/usr/local/go/bin/go", "/usr/lib/go/bin/go"))
    binary.parent.mkdir(parents=True, exist_ok=True)
    log(f"building oasdiff {OASDIFF_VERSION} with {go} (first run only, about a minute) ...")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=binary.parent) as tmp:  # rename in: never half a binary
        env = dict(os.environ, GOBIN=tmp, CGO_ENABLED="0")
        env["PATH"] = os.pathsep.join([str(Path(go).parent), env.get("PATH", "")])
        proc = subprocess.run(
            [go, "install", "-trimpath", "-ldflags", "-s -w", f"{OASDIFF_MODULE}@{OASDIFF_VERSION}"],
            env=env, cwd=tmp, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise ToolError(
                f"`go install {OASDIFF_MODULE}@{OASDIFF_VERSION}` failed:\n{proc.stderr[-3000:]}\n"
                f"Fix: check access to the Go module proxy (GOPROXY), or place oasdiff {OASDIFF_VERSION} at {binary}."
            )
        os.replace(Path(tmp) / "oasdiff", binary)
    if _oasdiff_version(binary) != OASDIFF_VERSION:
        raise ToolError(f"built oasdiff does not report {OASDIFF_VERSION}")
    log(f"oasdiff {OASDIFF_VERSION} built in {time.monotonic() - started:.0f}s: {binary}")
    return binary


def _npm_cache_dir() -> Path:
    lock = (ASYNCAPI_SPECS_DIR / "package-lock.json").read_bytes()
    return cache_bin_dir().parent / "npm" / f"asyncapi-specs-{hashlib.sha256(lock).hexdigest()[:12]}"


def asyncapi_schema(*, log: Any = print) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 JSON Schema (draft-07) from the pinned ``@asyncapi/specs``."""
    target = _npm_cache_dir()
    schema = target / "node_modules" / "@asyncapi" / "specs" / "schemas" / ASYNCAPI_SCHEMA
    if not schema.is_file():
        npm = _find("npm", ("/usr/bin/npm", "/usr/local/bin/npm"))
        target.parent.mkdir(parents=True, exist_ok=True)
        log(f"installing the AsyncAPI JSON Schemas (npm ci) into {target} ...")
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            for name in ("package.json", "package-lock.json"):
                shutil.copy2(ASYNCAPI_SPECS_DIR / name, Path(tmp) / name)
            proc = subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=tmp, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                raise ToolError(f"`npm ci` of devtools/asyncapi-specs failed:\n{proc.stderr[-3000:]}")
            try:
                os.replace(tmp, target)
                os.mkdir(tmp)  # TemporaryDirectory removes it again
            except OSError:
                if not schema.is_file():  # (else a concurrent run installed it first: fine)
                    raise
    return json.loads(schema.read_text(encoding="utf-8"))
