"""ghz, the gRPC load generator of ``bench/services.py``: built once from the Go module proxy.

Like helm (``devtools/chart.py``), the binary is built with ``go install`` into
``~/.cache/zhongtai/bin`` (``ZT_TOOLS_BIN`` overrides) the first time and reused after. The
version is pinned: ``github.com/bojand/ghz/cmd/ghz@latest`` resolves to v0.93.0 (2021) on the
module proxy, whose flags differ; v0.120.0 is the last release. ``go install`` leaves the
version string at ``dev`` (goreleaser stamps it), so the build stamps it with ``-ldflags``
and the cache is trusted only when ``ghz --version`` prints the pinned one.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from devtools.chart import ChartCheckError, _go_binary, cache_bin_dir

GHZ_VERSION = "v0.120.0"
GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz"


def _ghz_version(ghz: Path) -> str | None:
    try:
        out = subprocess.run([str(ghz), "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout or out.stderr).strip()


def ghz_binary(*, log=print) -> Path:  # type: ignore[no-untyped-def]
    """Return the cached ghz, building it with `go install` the first time (~2 minutes)."""
    ghz = cache_bin_dir() / "ghz"
    if ghz.exists() and _ghz_version(ghz) == GHZ_VERSION:
        return ghz
    try:
        go = _go_binary()
    except ChartCheckError as exc:
        raise ChartCheckError(str(exc).replace("helm", "ghz")) from None
    cache_bin_dir().mkdir(parents=True, exist_ok=True)
    log(f"building ghz {GHZ_VERSION} with {go} (first run only, a few minutes) ...")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="zt-ghz-") as tmp:
        proc = subprocess.run(
            [go, "install", f"-ldflags=-s -w -X main.version={GHZ_VERSION}", f"{GHZ_MODULE}@{GHZ_VERSION}"],
            env=dict(os.environ, GOBIN=tmp, CGO_ENABLED="0"),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ChartCheckError(
                f"`go install {GHZ_MODULE}@{GHZ_VERSION}` failed:\n{proc.stderr[-4000:]}\n"
                f"Fix the Go toolchain or its proxy access, or place a ghz {GHZ_VERSION} binary at {ghz}."
            )
        os.replace(Path(tmp) / "ghz", ghz)
    version = _ghz_version(ghz)
    if version != GHZ_VERSION:
        raise ChartCheckError(f"built ghz reports version {version!r}, expected {GHZ_VERSION}")
    log(f"ghz {GHZ_VERSION} built in {time.monotonic() - started:.0f}s: {ghz}")
    return ghz


if __name__ == "__main__":
    print(ghz_binary())
