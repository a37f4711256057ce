"""ghz, the gRPC load generator of ``bench/services.py``: built once from the Go module proxy.

Like helm (``devtools/chart.py``), the binary is built with ``go install`` into
``~/.cache/zhongtai/bin`` (``ZT_TOOLS_BIN`` overrides) the first time and reused after. The
version is pinned: ``github.com/bojand/ghz/cmd/ghz@latest`` resolves to v0.93.0 (2021) on the
module proxy, whose flags differ; v0.120.0 is the last release. ``go install`` leaves the
version string at ``dev`` (goreleaser stamps it), so the build stamps it with ``-ldflags``
and the cache is trusted only when ``ghz --version`` prints the pinned one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from devtools.chart import ChartCheckError, cache_bin_dir, go_install

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
    go_install("ghz", GHZ_MODULE, GHZ_VERSION, f"-s -w -X main.version={GHZ_VERSION}", log=log)
    version = _ghz_version(ghz)
    if version != GHZ_VERSION:
        raise ChartCheckError(f"built ghz reports version {version!r}, expected {GHZ_VERSION}")
    return ghz


if __name__ == "__main__":
    print(ghz_binary())
