"""The console's own JavaScript unit tests (``console/test/*.test.mjs``, Node's built-in runner):
the PKCE helpers of its OIDC sign-in (RFC 7636 Appendix B's vector)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CONSOLE = Path(__file__).resolve().parents[3] / "console"


def test_the_console_js_unit_tests_pass() -> None:
    node = shutil.which("node")
    assert node, "node is needed (make setup / .ci/run install nodejs for the console build)"
    tests = sorted(str(p) for p in (CONSOLE / "test").glob("*.test.mjs"))
    assert tests
    proc = subprocess.run([node, "--test", *tests], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout and "# pass 3" in proc.stdout, proc.stdout[-2000:]
