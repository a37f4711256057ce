"""Code generation for the contracts in ``proto/`` (``make proto`` / ``python -m devtools.protogen``).

What it does, in order:

1. Collects the third-party protos the contracts import into ``build/proto-deps/`` (git-ignored):
   ``google/api``, ``google/rpc``, ``google/type`` from the installed ``googleapis-common-protos``
   package, and ``buf/validate/validate.proto`` from the Maven Central jar
   ``build.buf:protovalidate`` (fetched once with ``mvn`` and cached under ``~/.cache/zhongtai/``).
   The well-known types (``google/protobuf/*``) come from grpc_tools' bundled include dir for
   protoc; buf has them built in.
2. Runs ``grpc_tools.protoc`` over every ``proto/bank/**/*.proto`` into ``gen/`` (git-ignored):
   ``*_pb2.py``, ``*_pb2_grpc.py`` and mypy-protobuf ``*.pyi`` stubs; plus
   ``buf/validate/validate_pb2.py``: our ``*_pb2`` modules import it (``google.protobuf`` needs
   every dependency in its descriptor pool) and tests build rules with its extensions.
   protovalidate 2.x ships its own copy of ``buf/validate/validate.proto`` only for its
   ``protobuf-py`` runtime (``protovalidate._gen.buf.validate.validate_pb``, in protobuf-py's own
   registry), so the two never meet in one pool; but both must say the same, or the rules the
   contracts write would not be the rules the library evaluates: the import check compares them
   (:func:`validate_proto_drift`) and fails on any difference beyond codegen file options.
   ``google.api``/``google.rpc``/``google.type`` modules are NOT generated: they come from the
   ``googleapis-common-protos`` package.
3. Adds ``__init__.py`` files so ``from bank.customer.v1 import customer_pb2`` works with ``gen/``
   on ``sys.path``, and checks in a subprocess that the result (and ``protovalidate``) imports and
   that ``buf/validate/validate.proto`` is the one the installed protovalidate evaluates.

Generation happens in a scratch directory that replaces ``gen/`` at the end, so stale modules of
deleted protos disappear. A hash of all inputs is kept in ``gen/.inputs.sha256``: when nothing
changed the run is a no-op (``--force`` regenerates anyway).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO / "proto"
BANK_DIR = PROTO_DIR / "bank"
DEPS_DIR = REPO / "build" / "proto-deps"
GEN_DIR = REPO / "gen"
HASH_FILE = ".inputs.sha256"

# The jar's buf/validate/validate.proto is the one protovalidate (Python) 2.1 embeds and evaluates:
# bump the two together (the import check fails when they differ).
PROTOVALIDATE_ARTIFACT = "build.buf:protovalidate:1.3.0"
PROTOVALIDATE_JAR = "protovalidate-1.3.0.jar"
VALIDATE_PROTO = "buf/validate/validate.proto"
GOOGLEAPIS_DIRS = ("google/api", "google/rpc", "google/type")

# Modules that must import after generation (gen/ first on sys.path).
IMPORT_CHECK = (
    "import sys\n"
    "import protovalidate\n"
    "from buf.validate import validate_pb2\n"
    "from devtools.protogen import library_validate_proto, validate_proto_drift\n"
    "drift = validate_proto_drift(validate_pb2.DESCRIPTOR.serialized_pb, library_validate_proto())\n"
    "if drift:\n"
    "    sys.exit('buf/validate/validate.proto is not the one protovalidate evaluates: ' + '; '.join(drift))\n"
    "from google.type import money_pb2, date_pb2\n"
    "from google.api import annotations_pb2, field_behavior_pb2\n"
    "from google.rpc import status_pb2\n"
    "import importlib, sys\n"
    "for name in sys.argv[1:]:\n"
    "    importlib.import_module(name)\n"
)


def library_validate_proto() -> bytes:
    """The ``buf/validate/validate.proto`` the installed protovalidate (2.x) evaluates, serialized.

    protovalidate 2.x embeds it in its protobuf-py module ``protovalidate._gen.buf.validate.validate_pb``
    (reached through the public ``protovalidate.ViolationPb``, which that module defines).
    """
    import protovalidate

    module = sys.modules[protovalidate.ViolationPb.__module__]
    return bytes(module.desc().proto.to_binary())


def validate_proto_drift(ours: bytes, theirs: bytes) -> list[str]:
    """Differences between two serialized ``buf/validate/validate.proto`` descriptors that matter.

    File options (java_package, go_package... set by whoever generated the code) and ``json_name``
    (protoc leaves it out of the ``_pb2`` descriptor) are ignored: what is compared is every
    message, field, rule (with its CEL), enum and extension.
    """
    from google.protobuf import descriptor_pb2

    def normalized(data: bytes) -> descriptor_pb2.FileDescriptorProto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(data)
        proto.ClearField("options")
        proto.ClearField("source_code_info")
        fields = list(proto.extension)
        pending = list(proto.message_type)
        while pending:
            message = pending.pop()
            fields += [*message.field, *message.extension]
            pending += message.nested_type
        for field in fields:
            field.ClearField("json_name")
        return proto

    a, b = normalized(ours), normalized(theirs)
    if a == b:
        return []
    drift: list[str] = []
    if a.name != b.name or a.package != b.package:
        drift.append(f"file {a.name} ({a.package}) vs {b.name} ({b.package})")
    ours_messages = {m.name: m for m in a.message_type}
    theirs_messages = {m.name: m for m in b.message_type}
    for name in sorted(ours_messages.keys() ^ theirs_messages.keys()):
        drift.append(f"message {name} only in {'ours' if name in ours_messages else 'the library'}")
    for name in sorted(ours_messages.keys() & theirs_messages.keys()):
        if ours_messages[name] != theirs_messages[name]:
            drift.append(f"message {name} differs")
    if list(a.enum_type) != list(b.enum_type):
        drift.append("enums differ")
    if list(a.extension) != list(b.extension):
        drift.append("extensions differ")
    if list(a.dependency) != list(b.dependency):
        drift.append("imports differ")
    return drift or ["descriptors differ"]


class ProtogenError(RuntimeError):
    """A failure with an actionable message."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zhongtai"


def _log(msg: str) -> None:
    print(f"[protogen] {msg}", flush=True)


# --------------------------------------------------------------------------- third-party protos


def _googleapis_root() -> Path:
    """site-packages directory that holds google/api/*.proto (googleapis-common-protos)."""
    import google.api

    for entry in google.api.__path__:
        candidate = Path(entry)
        if (candidate / "annotations.proto").is_file():
            return candidate.parent.parent
    raise ProtogenError(
        "google/api/annotations.proto not found: install googleapis-common-protos "
        "(pip install -c constraints.txt -e '.[dev]')"
    )


def _grpc_tools_include() -> Path:
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    if not (include / "google" / "protobuf" / "descriptor.proto").is_file():
        raise ProtogenError(f"grpc_tools include dir without well-known types: {include}")
    return include


def _protovalidate_jar() -> Path:
    target_dir = cache_dir() / "protovalidate"
    jar = target_dir / PROTOVALIDATE_JAR
    if jar.is_file() and zipfile.is_zipfile(jar):
        return jar
    missing = [tool for tool in ("mvn", "java") if shutil.which(tool) is None]
    if missing:
        raise ProtogenError(
            f"{' and '.join(missing)} not found, needed once to fetch {PROTOVALIDATE_ARTIFACT} "
            "from Maven Central: apt-get install -y maven openjdk-17-jre-headless"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    _log(f"fetching {PROTOVALIDATE_ARTIFACT} with mvn into {target_dir}")
    cmd = [
        "mvn",
        "-q",
        "-B",
        "dependency:copy",
        f"-Dartifact={PROTOVALIDATE_ARTIFACT}",
        f"-DoutputDirectory={target_dir}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not jar.is_file():
        raise ProtogenError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return jar


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def collect_deps(deps_dir: Path = DEPS_DIR) -> Path:
    """Populate ``build/proto-deps`` with google/{api,rpc,type} and buf/validate protos."""
    wanted: dict[str, bytes] = {}
    root = _googleapis_root()
    for rel in GOOGLEAPIS_DIRS:
        src_dir = root / rel
        files = sorted(src_dir.glob("*.proto"))
        if not files:
            raise ProtogenError(f"no .proto files in {src_dir} (googleapis-common-protos)")
        for src in files:
            wanted[f"{rel}/{src.name}"] = src.read_bytes()
    with zipfile.ZipFile(_protovalidate_jar()) as jar:
        try:
            wanted[VALIDATE_PROTO] = jar.read(VALIDATE_PROTO)
        except KeyError as exc:
            raise ProtogenError(f"{VALIDATE_PROTO} missing from {PROTOVALIDATE_JAR}") from exc
    for rel, data in wanted.items():
        _write_if_changed(deps_dir / rel, data)
    # Drop files that are no longer wanted (e.g. after a googleapis upgrade).
    if deps_dir.is_dir():
        for path in deps_dir.rglob("*.proto"):
            if path.relative_to(deps_dir).as_posix() not in wanted:
                path.unlink()
    return deps_dir


# --------------------------------------------------------------------------- generation


def bank_protos(proto_dir: Path = PROTO_DIR) -> list[str]:
    """Paths (relative to proto/) of every contract proto; the baseline dir is never included."""
    return sorted(
        p.relative_to(proto_dir).as_posix()
        for p in (proto_dir / "bank").rglob("*.proto")
        if "baseline" not in p.relative_to(proto_dir).parts
    )


def _plugin(name: str) -> str:
    exe = Path(sys.executable).parent / name
    if exe.is_file():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        raise ProtogenError(f"{name} not found: install mypy-protobuf (pip install -c constraints.txt -e '.[dev]')")
    return found


def _protoc(args: Sequence[str]) -> None:
    from grpc_tools import protoc

    code = protoc.main(["grpc_tools.protoc", *args])
    if code != 0:
        raise ProtogenError(f"protoc failed (exit {code}): protoc {' '.join(args)}")


def _inputs_hash(files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    for dist in ("grpcio-tools", "mypy-protobuf", "protobuf", "protovalidate"):
        try:
            digest.update(f"{dist}={version(dist)};".encode())
        except PackageNotFoundError:
            digest.update(f"{dist}=?;".encode())
    return digest.hexdigest()


def _add_init_files(root: Path) -> None:
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        if directory == root:
            continue
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")


def generate(out_dir: Path, deps_dir: Path, protos: Sequence[str]) -> None:
    wkt = _grpc_tools_include()
    includes = [f"-I{PROTO_DIR}", f"-I{deps_dir}", f"-I{wkt}"]
    plugins = [
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
    ]
    _protoc(
        [
            *includes,
            *plugins,
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out=quiet:{out_dir}",
            f"--mypy_grpc_out=quiet:{out_dir}",
            *protos,
        ]
    )
    # Our *_pb2 modules import buf.validate.validate_pb2; no package ships it for google.protobuf
    # (protovalidate 2.x's own copy is a protobuf-py module: see the module docstring).
    _protoc(
        [
            *includes,
            plugins[0],
            f"--python_out={out_dir}",
            f"--mypy_out=quiet:{out_dir}",
            VALIDATE_PROTO,
        ]
    )
    _add_init_files(out_dir)


def check_imports(gen_dir: Path, protos: Sequence[str]) -> None:
    modules = [p.removesuffix(".proto").replace("/", ".") + "_pb2" for p in protos]
    modules += [m + "_grpc" for m in modules if (gen_dir / (m.replace(".", "/") + "_grpc.py")).is_file()]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(gen_dir), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK, *modules],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise ProtogenError(f"generated code does not import:\n{proc.stderr}")


def run(force: bool = False) -> int:
    protos = bank_protos()
    if not protos:
        raise ProtogenError(f"no .proto files under {BANK_DIR}")
    deps_dir = collect_deps()
    inputs = [PROTO_DIR / p for p in protos]
    inputs += [p for p in deps_dir.rglob("*.proto")]
    inputs.append(Path(__file__).resolve())
    digest = _inputs_hash(inputs)
    hash_path = GEN_DIR / HASH_FILE
    expected = [GEN_DIR / p.replace(".proto", "_pb2.py") for p in [*protos, VALIDATE_PROTO]]
    complete = all(path.is_file() for path in expected)
    if not force and complete and hash_path.is_file() and hash_path.read_text().strip() == digest:
        _log(f"gen/ is up to date ({len(protos)} protos)")
        return 0

    # Private scratch dirs: two concurrent runs (e.g. `make -j`) never mix their outputs.
    (REPO / "build").mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="gen.", dir=REPO / "build"))
    try:
        generate(scratch, deps_dir, protos)
        check_imports(scratch, protos)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    (scratch / HASH_FILE).write_text(digest + "\n")

    old = Path(tempfile.mkdtemp(prefix="gen-old.", dir=REPO / "build")) / "gen"
    if GEN_DIR.exists():
        GEN_DIR.rename(old)
    scratch.rename(GEN_DIR)
    shutil.rmtree(old.parent, ignore_errors=True)
    _log(f"generated {len(protos)} protos + {VALIDATE_PROTO} into {GEN_DIR.relative_to(REPO)}/")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.protogen", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="regenerate even if inputs are unchanged")
    parser.add_argument("--deps-only", action="store_true", help="only collect build/proto-deps (for buf)")
    args = parser.parse_args(argv)
    try:
        if args.deps_only:
            collect_deps()
            _log(f"collected third-party protos into {DEPS_DIR.relative_to(REPO)}/")
            return 0
        return run(force=args.force)
    except ProtogenError as exc:
        print(f"[protogen] ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
