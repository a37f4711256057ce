"""``zhongtai``: one entry point for every component (one image, the command selects).

    zhongtai customer | product | data_hub | gateway    run a component until SIGTERM
    zhongtai relay --service NAME                       a standalone outbox relay
    zhongtai migrate [NAME ...]                         Alembic migrations to head (gateway: its shared table)
    zhongtai token --scope "a b" [--client-id X]        mint a dev HS256 token
    zhongtai demo-data                                  seed demo data through the gRPC APIs (devtools.synth)
    zhongtai healthcheck HOST:PORT                      gRPC health check (exit 0 when SERVING)
    zhongtai reconcile --product-db URL [...]           ledger vs postings, outbox vs topics, views vs ledger
    zhongtai models train|backtest|ceiling|crossval|snapshot ... the data hub's trained scores (devtools.models.cli)

A component lives in ``services/<name>/main.py`` (``gateway/main.py`` for the gateway) and
exposes ``run() -> None``; a service with a database also exposes ``async migrate() -> None``
and ``async relay() -> None``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.util
import os
import sys

COMPONENT_MODULES = {
    "customer": "services.customer.main",
    "product": "services.product.main",
    "data_hub": "services.data_hub.main",
    "gateway": "gateway.main",
}
DB_SERVICES = ("customer", "product", "data_hub")
DEV_SECRET = "zhongtai-dev-secret-change-me-0123456789"  # noqa: S105 - the documented, public dev-only value


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def available_components() -> list[str]:
    """Components whose code exists, in start order."""
    return [name for name, module in COMPONENT_MODULES.items() if _exists(module)]


def _module(name: str):  # type: ignore[no-untyped-def]
    if name not in COMPONENT_MODULES:
        raise SystemExit(f"unknown component {name!r}; choose from {', '.join(COMPONENT_MODULES)}")
    if not _exists(COMPONENT_MODULES[name]):
        raise SystemExit(f"component {name!r} is not implemented yet")
    return importlib.import_module(COMPONENT_MODULES[name])


def _token(args: argparse.Namespace) -> int:
    from services.kit import ALL_SCOPES, mint_token

    secret = os.environ.get("ZT_AUTH_HS256_SECRET", DEV_SECRET)
    scopes = args.scope.split() if args.scope else list(ALL_SCOPES)
    print(
        mint_token(
            secret,
            scopes,
            client_id=args.client_id,
            issuer=os.environ.get("ZT_AUTH_ISSUER", "zhongtai-dev"),
            audience=os.environ.get("ZT_AUTH_AUDIENCE", "zhongtai"),
            ttl_s=args.ttl,
        )
    )
    return 0


async def _healthcheck(target: str, deadline_s: float) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            print(f"{target}: {exc.code().name}", file=sys.stderr)
            return 1
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _run_component(name: str) -> None:
    if name in DB_SERVICES:
        # Importing and wiring a service allocates ~1,000 modules' worth of long-lived objects:
        # the cyclic collector would walk them again and again (~20 % of the start-up's CPU).
        # The kit's lifecycle collects once, freezes what is there and switches it on again.
        gc.disable()
    _module(name).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zhongtai", description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMPONENT_MODULES:
        sub.add_parser(name, help=f"run the {name} component")
    relay = sub.add_parser("relay", help="run a standalone outbox relay")
    relay.add_argument("--service", required=True, choices=[s for s in DB_SERVICES if s != "data_hub"])
    migrate = sub.add_parser("migrate", help="run database migrations")
    migrate.add_argument("services", nargs="*", choices=[[], *DB_SERVICES, "gateway"], default=[])
    token = sub.add_parser("token", help="mint a dev token (HS256)")
    token.add_argument("--scope", default="", help="space-separated scopes (default: all)")
    token.add_argument("--client-id", default="dev-cli")
    token.add_argument("--ttl", type=int, default=3600 * 8)
    sub.add_parser("demo-data", help="seed demo customers, products and activity")
    health = sub.add_parser("healthcheck", help="gRPC health check")
    health.add_argument("target")
    health.add_argument("--timeout", type=float, default=3.0)
    sub.add_parser("components", help="list the components that exist")
    sub.add_parser("reconcile", help="compare ledger, outbox, topics and views; exit 1 on any difference")
    models = sub.add_parser("models", help="train, back-test, bound and snapshot the data hub's scores", add_help=False)
    models.add_argument("rest", nargs=argparse.REMAINDER)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["reconcile"]:
        from services.reconcile import main as reconcile

        return reconcile(argv[1:])
    args = parser.parse_args(argv)

    if args.command in COMPONENT_MODULES:
        _run_component(args.command)
        return 0
    if args.command == "relay":
        asyncio.run(_module(args.service).relay())
        return 0
    if args.command == "migrate":
        names = args.services or [s for s in DB_SERVICES if s in available_components()]
        for name in names:
            asyncio.run(_module(name).migrate())
            print(f"migrated {name}")
        return 0
    if args.command == "token":
        return _token(args)
    if args.command == "demo-data":
        # The seeded generator is dev tooling (devtools/synth.py); it calls the services' gRPC APIs.
        if not _exists("devtools.synth"):
            print("no demo data generator yet (devtools/synth.py)")
            return 0
        return int(importlib.import_module("devtools.synth").demo_main() or 0)
    if args.command == "models":
        # Training and back-testing are tooling (devtools/models; scikit-learn, matplotlib).
        return int(importlib.import_module("devtools.models.cli").main(args.rest))
    if args.command == "healthcheck":
        return asyncio.run(_healthcheck(args.target, args.timeout))
    if args.command == "components":
        print(" ".join(available_components()))
        return 0
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
