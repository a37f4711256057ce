"""An offline Dockerfile linter (hadolint is not available here) for the one image."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devtools import chart

DOCKERFILE = chart.REPO_ROOT / "Dockerfile"
DOCKERIGNORE = chart.REPO_ROOT / ".dockerignore"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    instructions: list[Instruction] = []
    buf, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buf = ""
    assert not buf, "dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            parts = ins.args.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert ins.keyword == "ARG", f"line {ins.line}: only ARG may precede FROM"
            key, _, default = ins.args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(ins)
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


def exec_form(ins: Instruction) -> list[str]:
    value = json.loads(ins.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"line {ins.line}: exec form"
    return value


def test_multi_stage_with_pinned_slim_python_base(stages):
    assert len(stages) >= 2, "build and runtime stages expected"
    stage_names = {s.name for s in stages}
    for stage in stages:
        if stage.base in stage_names:
            continue
        image, _, digest = stage.base.partition("@")
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        assert tag or digest, f"{stage.base}: pin a tag or digest"
        assert tag.lower() != "latest", f"{stage.base}: never latest"
        assert repo.endswith("python") and re.match(r"3\.11\.\d+-slim", tag), f"{stage.base}: slim python 3.11.x"


def test_runtime_runs_as_numeric_non_root_user(stages):
    runtime = stages[-1]
    users = runtime.all("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) == 10001, "numeric uid 10001 (runAsNonRoot can only check numbers)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # Nothing runs as root after the USER switch.
    after = runtime.instructions[runtime.instructions.index(users[-1]) :]
    assert not [i for i in after if i.keyword == "RUN"], "no RUN after USER"


def test_no_add_of_urls_and_no_remote_fetches(stages):
    for stage in stages:
        for ins in stage.instructions:
            assert ins.keyword != "ADD", f"line {ins.line}: use COPY (ADD fetches URLs and unpacks archives)"
            if ins.keyword == "RUN":
                assert not re.search(r"\b(curl|wget)\b", ins.args), f"line {ins.line}: no downloads in RUN"
                assert "sudo" not in ins.args


def test_dependencies_layer_comes_first_and_uses_the_constraints(stages):
    build = stages[0]
    copies = build.all("COPY")
    first = copies[0].args.split()
    assert set(first[:-1]) == {"pyproject.toml", "constraints.txt"}, "copy only the dependency manifests first"
    runs = build.all("RUN")
    pip = [r for r in runs if "pip install" in r.args]
    assert pip and "-c constraints.txt" in pip[0].args
    # The pip layer precedes every copy of application code.
    assert pip[0].line < min(c.line for c in copies[1:])


def test_generated_code_is_copied_not_generated(stages):
    build_copies = " ".join(c.args for c in stages[0].all("COPY"))
    assert "gen/" in build_copies
    for stage in stages:
        for ins in stage.all("RUN"):
            assert "devtools.protogen" not in ins.args and "mvn" not in ins.args


def test_runtime_has_no_build_tools_or_installs(stages):
    runtime = stages[-1]
    for ins in runtime.all("RUN"):
        assert "pip install" not in ins.args and "apt-get install" not in ins.args, f"line {ins.line}"
    for stage in stages:
        for ins in stage.all("RUN"):
            if "apt-get install" in ins.args:
                assert "--no-install-recommends" in ins.args, f"line {ins.line}"
    copied_from = [c.args for c in runtime.all("COPY")]
    assert all(args.startswith("--from=") for args in copied_from), "runtime copies only from the build stage"


def test_entrypoint_env_and_ports(stages):
    runtime = stages[-1]
    assert exec_form(runtime.all("ENTRYPOINT")[-1]) == ["python", "-m", "services.cli"]
    assert exec_form(runtime.all("CMD")[-1]) == ["gateway"]
    env = " ".join(i.args for i in runtime.all("ENV"))
    pythonpath = dict(shlex.split(pair)[0].split("=", 1) for pair in re.findall(r"\S+=\S+", env))["PYTHONPATH"]
    assert pythonpath.split(":") == ["/app", "/app/gen"]
    exposed = {int(p) for i in runtime.all("EXPOSE") for p in i.args.split()}
    assert {50051, 50052, 50053, 8080, 9464} <= exposed
    # Kubernetes ignores HEALTHCHECK; the chart has native probes. Allowed, not needed.
    assert not runtime.all("HEALTHCHECK")


def test_dockerignore_keeps_gen_and_drops_local_state():
    entries = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    for must in (".git", ".venv", "var/", "tests/"):
        assert must in entries, must
    assert not [e for e in entries if e.rstrip("/") in ("gen", "gen/*", "gen/**", "*") or e.startswith("gen/bank")]
    for needed in ("services", "gateway", "pyproject.toml", "constraints.txt"):
        assert not [e for e in entries if e.rstrip("/") == needed], needed


def test_linter_catches_bad_dockerfiles():
    _, bad = parse("FROM python:latest\nADD https://example.com/x.tgz /x\nUSER root\nCMD python app.py\n")
    with pytest.raises(AssertionError):
        test_multi_stage_with_pinned_slim_python_base(bad)
    with pytest.raises(AssertionError):
        test_runtime_runs_as_numeric_non_root_user(bad)
    with pytest.raises(AssertionError):
        test_no_add_of_urls_and_no_remote_fetches(bad)


# --------------------------------------------------------------- run-time contents ----
RUNTIME_MODULES = [
    "services.cli",
    "services.customer.main",
    "services.product.main",
    "services.data_hub.main",
    "gateway.main",
]


def _repo_modules_imported_at_run_time() -> set[str]:
    """Top-level repository directories whose code the processes import (fresh interpreter)."""
    script = (
        "import importlib, json, sys\n"
        f"for m in {RUNTIME_MODULES!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({getattr(m, '__file__', None) or '' for m in list(sys.modules.values())})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stderr
    root = chart.REPO_ROOT.resolve()
    tops = set()
    for file in json.loads(proc.stdout):
        path = Path(file).resolve() if file else None
        if path and path.is_relative_to(root) and ".venv" not in path.parts:
            tops.add(path.relative_to(root).parts[0])
    return tops


def _ignored(rel: str, entries: list[str]) -> bool:
    return any(fnmatch.fnmatch(rel, e.rstrip("/")) or rel.startswith(e.rstrip("/") + "/") for e in entries)


def test_image_contains_everything_the_processes_import_and_read(stages):
    build = stages[0]
    copied = {shlex.split(c.args)[0].rstrip("/") for c in build.all("COPY") if not c.args.startswith("--")}
    tops = _repo_modules_imported_at_run_time()
    assert {"services", "gateway", "gen"} <= tops
    assert not tops & {"devtools", "tests", "bench"}, f"run-time code imports dev-only packages: {tops}"
    assert tops <= copied, f"imported but not copied into the image: {tops - copied}"
    entries = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    data_files = [
        *sorted(chart.REPO_ROOT.glob("services/*/migrations/**/*.py")),
        *sorted((chart.REPO_ROOT / "gateway" / "static").iterdir()),
    ]
    assert len(data_files) > 5
    for path in data_files:
        rel = str(path.relative_to(chart.REPO_ROOT))
        assert not _ignored(rel, entries), f"{rel} is excluded by .dockerignore but read at run time"
    # The build stage proves it: every component imports and the migrations are present.
    check = next(i.args for i in build.all("RUN") if "import services.cli" in i.args)
    for module in RUNTIME_MODULES:
        assert module in check, module
    assert "migrations/env.py" in check
