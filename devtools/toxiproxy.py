"""Toxiproxy, a real TCP fault proxy (latency, connection resets, partitions) for the chaos suite.

Built once from the Go module proxy and cached beside helm (``~/.cache/zhongtai/bin``), pinned:
``@latest`` resolves to a 2022 tag, and the binary ``go install`` makes is named ``server``
(PITFALLS). Its REST API is small and called with httpx.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from devtools import stack
from devtools.chart import _go_binary, cache_bin_dir

TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"


def toxiproxy_binary(*, log: Any = print) -> Path:
    """The cached toxiproxy server, built with ``go install`` the first time (~1-2 minutes)."""
    binary = cache_bin_dir() / f"toxiproxy-server-{TOXIPROXY_VERSION}"
    if binary.exists():
        return binary
    go = _go_binary()
    binary.parent.mkdir(parents=True, exist_ok=True)
    log(f"building toxiproxy {TOXIPROXY_VERSION} with {go} (first run only) ...")
    with tempfile.TemporaryDirectory(dir=binary.parent) as tmp:
        env = {**os.environ, "GOBIN": tmp, "CGO_ENABLED": "0"}
        subprocess.run([go, "install", f"{TOXIPROXY_MODULE}@{TOXIPROXY_VERSION}"], env=env, check=True, cwd=tmp)
        os.replace(Path(tmp) / "server", binary)  # a concurrent run never sees half a binary
    return binary


class Toxiproxy:
    """A toxiproxy server on a free port; proxies and toxics through its REST API."""

    def __init__(self) -> None:
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> None:
        binary = toxiproxy_binary()
        self.port = stack.free_port()
        self._log = log_dir / "toxiproxy.log"
        with open(self._log, "ab") as out:
            self._proc = subprocess.Popen(
                [str(binary), "-host", "127.0.0.1", "-port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=stack._die_with_parent(signal.SIGTERM),
            )
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{self.api}/version", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise stack.StackError(f"toxiproxy did not start: {self._log}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stack._stop_process_group(proc, signal.SIGTERM, grace=5.0)

    def proxy(self, name: str, upstream: str, port: int | None = None) -> int:
        """A proxy to ``upstream`` (host:port) on ``port`` (default: a free one); returns that port."""
        port = port or stack.free_port()
        body = {"name": name, "listen": f"127.0.0.1:{port}", "upstream": upstream, "enabled": True}
        httpx.post(f"{self.api}/proxies", json=body, timeout=5).raise_for_status()
        return port

    def enable(self, name: str, enabled: bool) -> None:
        """Disabled: every connection through the proxy is closed and new ones refused (a partition)."""
        httpx.post(f"{self.api}/proxies/{name}", json={"enabled": enabled}, timeout=5).raise_for_status()

    def add_toxic(
        self, name: str, toxic: str, kind: str, attributes: dict[str, Any], stream: str = "downstream"
    ) -> None:
        body = {"name": toxic, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes}
        httpx.post(f"{self.api}/proxies/{name}/toxics", json=body, timeout=5).raise_for_status()

    def remove_toxic(self, name: str, toxic: str) -> None:
        httpx.delete(f"{self.api}/proxies/{name}/toxics/{toxic}", timeout=5).raise_for_status()


def available() -> bool:
    """Go is there to build it, or it is built."""
    return (cache_bin_dir() / f"toxiproxy-server-{TOXIPROXY_VERSION}").exists() or bool(
        shutil.which("go") or os.access("/usr/local/go/bin/go", os.X_OK)
    )
