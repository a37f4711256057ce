"""Gateway cost in instructions: valgrind's callgrind counts what one ``GET /v1/customers/{id}``
costs the gateway process, in machine instructions (Ir), against bench/gateway.py's in-memory
backend. Not a test.

Why a second gateway benchmark: on this shared 2-core VM, CPU time per request moves by ±25 %
with the neighbours' load, which hides a 10 % regression; an instruction count does not move
with load at all (two runs of the same code differ by < 2 %). So this one answers "which commit
made the gateway dearer, and by how much", and bench/gateway.py keeps answering "how fast".

The gateway runs under ``valgrind --tool=callgrind --instr-atstart=no`` (start-up is not
counted: instrumentation is switched on by ``callgrind_control -i on`` after a warm-up of 50
requests and off after the measured ones), with its access log on (INFO) as in production.
One keep-alive client sends the requests one by one. Python runs ~50× slower under valgrind,
so the default is 200 requests (a few minutes).

    .venv/bin/python bench/gateway_instructions.py                       # this checkout
    .venv/bin/python bench/gateway_instructions.py --baseline /tmp/old   # and an older checkout beside

``--baseline DIR`` measures a checkout of older code with this venv (its modules shadow this
checkout's: ``python -m`` puts the working directory first), both at the same time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.stack import free_port  # noqa: E402
from services.cli import DEV_SECRET  # noqa: E402
from services.kit.auth import mint_token  # noqa: E402

CUSTOMER_ID = "c-bench-0001"  # the in-memory backend's customer (bench/gateway.py)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZT_")}
    env.update(ZT_ENVIRONMENT="test", ZT_AUTH_HS256_SECRET=DEV_SECRET, ZT_LOG_LEVEL="WARNING")
    env.update(extra)
    return env


def _wait_ready(client: object, deadline: float) -> None:
    import httpx

    assert isinstance(client, httpx.Client)
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("the gateway under valgrind did not become ready")


def _total_ir(out: Path) -> int:
    total = 0
    for dump in out.parent.glob(out.name + "*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    return total


def _send(client: object, count: int) -> None:
    import httpx

    assert isinstance(client, httpx.Client)
    for _ in range(count):
        reply = client.get(f"/v1/customers/{CUSTOMER_ID}")
        if reply.status_code != 200:
            raise RuntimeError(f"gateway answered {reply.status_code}: {reply.text[:200]}")


def _callgrind(pid: int, *command: str) -> None:
    subprocess.run(["callgrind_control", *command, str(pid)], check=True, capture_output=True)


def measure(checkout: Path, requests: int) -> float:
    """Thousands of instructions per request in the gateway of ``checkout``."""
    import httpx

    backend_port, port = free_port(), free_port()
    backend = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "gateway.py"), "--backend", str(backend_port)],
        cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
    )  # fmt: skip
    target = f"127.0.0.1:{backend_port}"
    with tempfile.TemporaryDirectory(prefix="zt-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        gateway = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             sys.executable, "-m", "services.cli", "gateway"],
            cwd=checkout,
            env=_env(ZT_HTTP_PORT=str(port), ZT_HTTP_SERVER="uvicorn", ZT_CUSTOMER_TARGET=target,
                     ZT_PRODUCT_TARGET=target, ZT_DATAHUB_TARGET=target, ZT_QUOTA_READS_RPS="1000000",
                     ZT_QUOTA_READS_BURST="1000000", ZT_LOG_LEVEL="INFO", PYTHONMALLOC="malloc"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            headers = {"authorization": f"Bearer {mint_token(DEV_SECRET, ['customers:read'], client_id='bench')}"}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as client:
                _wait_ready(client, time.monotonic() + 900)
                _send(client, 50)
                _callgrind(gateway.pid, "-i", "on")
                _send(client, requests)
                _callgrind(gateway.pid, "-i", "off")
                _callgrind(gateway.pid, "-d")
            time.sleep(1)
            return _total_ir(out) / requests / 1000
        finally:
            gateway.send_signal(signal.SIGTERM)
            backend.terminate()
            for proc in (gateway, backend):
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--baseline", type=Path, help="a checkout of older code, measured beside this one")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("skipped: needs valgrind and callgrind_control (Debian: apt-get install valgrind)")
        return
    checkouts = {"this checkout": REPO}
    if args.baseline:
        checkouts["baseline"] = args.baseline.resolve()
    print(f"requests: {args.requests} (after 50 warm-up)  load average: {os.getloadavg()[0]:.2f}")
    with concurrent.futures.ThreadPoolExecutor(len(checkouts)) as pool:
        futures = {name: pool.submit(measure, path, args.requests) for name, path in checkouts.items()}
        results = {name: future.result() for name, future in futures.items()}
    for name, kir in results.items():
        print(f"{name:14} {checkouts[name]}: {kir:,.0f} kIr per request")
    if args.baseline:
        print(f"ratio this/baseline: {results['this checkout'] / results['baseline']:.3f}")


if __name__ == "__main__":
    main()
