"""The ceiling cells of ``bench/services.py``, each served by its own process (not a test).

    .venv/bin/python -m bench._cells KIND PORT [DSN]

- ``A``: a bare ``grpc.aio`` server answering ``CustomerService.GetCustomer`` from memory.
- ``B``: the kit's own :class:`~services.kit.GrpcServer` (tracing, auth + scopes, validation,
  error translation, RED metrics, access log — as a service runs it) answering the same from
  memory. ``B-nolog`` / ``B-notrace`` / ``B-noauth`` switch one part off (the access log via
  ``ZT_LOG_LEVEL=WARNING``, spans via ``OTEL_SDK_DISABLED``, auth + validation via no verifier),
  so each part's cost is measured separately.
- ``C-read``: bare ``grpc.aio`` + one asyncpg primary-key SELECT per call.
- ``C-write``: bare ``grpc.aio`` + an asyncpg transaction of four statements per call (SELECT ...
  FOR UPDATE, UPDATE ... RETURNING, INSERT the posting, INSERT an outbox row): a posting's floor.

The cells' schema lives in its own database (``DSN``); :func:`create_schema` makes it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
from google.type import money_pb2

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from bank.product.v1 import product_pb2

GET_CUSTOMER = "/bank.customer.v1.CustomerService/GetCustomer"
POST_TRANSACTION = "/bank.product.v1.ProductService/PostTransaction"
ACCOUNTS = 32

SCHEMA = """
CREATE TABLE IF NOT EXISTS cell_customer (customer_id text PRIMARY KEY, full_name text NOT NULL,
    national_id text NOT NULL, mobile text NOT NULL, status int NOT NULL, version int NOT NULL);
CREATE TABLE IF NOT EXISTS cell_account (account_id text PRIMARY KEY, customer_id text NOT NULL,
    state int NOT NULL, currency text NOT NULL, balance_minor bigint NOT NULL, version int NOT NULL);
CREATE TABLE IF NOT EXISTS cell_posting (seq bigserial PRIMARY KEY, posting_id text UNIQUE NOT NULL,
    account_id text NOT NULL, direction int NOT NULL, amount_minor bigint NOT NULL,
    balance_after_minor bigint NOT NULL, post_time timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS cell_outbox (id bigserial PRIMARY KEY, aggregate_id text NOT NULL,
    version int NOT NULL, payload bytea NOT NULL, created_at timestamptz NOT NULL);
"""


async def create_schema(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        await conn.executemany(
            "INSERT INTO cell_customer VALUES ($1, '李*', '110101********3217', '138****5678', 2, 1) "
            "ON CONFLICT DO NOTHING",
            [(f"cell-{i}",) for i in range(ACCOUNTS)],
        )
        await conn.executemany(
            "INSERT INTO cell_account VALUES ($1, $2, 1, 'CNY', 10000, 1) ON CONFLICT DO NOTHING",
            [(f"acct-{i}", f"cell-{i}") for i in range(ACCOUNTS)],
        )
    finally:
        await conn.close()


async def _keep(_conn: asyncpg.Connection) -> None:
    return None


def _customer(customer_id: str) -> customer_pb2.Customer:
    return customer_pb2.Customer(
        customer_id=customer_id,
        full_name="李*",
        national_id="110101********3217",
        mobile="138****5678",
        status=customer_pb2.Customer.STATUS_ACTIVE,
        kyc_verified=True,
        etag='W/"1"',
    )


def _unary(fn: Any, request_type: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=request_type.FromString, response_serializer=lambda m: m.SerializeToString()
    )


def _bare_server(handlers: dict[str, grpc.RpcMethodHandler]) -> grpc.aio.Server:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)], maximum_concurrent_rpcs=256)
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for path, handler in handlers.items():
        service, _, method = path.lstrip("/").partition("/")
        by_service.setdefault(service, {})[method] = handler
    for service, methods in by_service.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
    return server


async def serve_bare(kind: str, port: int, dsn: str) -> None:
    if kind == "A":

        async def get(request: customer_pb2.GetCustomerRequest, context: Any) -> customer_pb2.Customer:
            return _customer(request.customer_id)

        server = _bare_server({GET_CUSTOMER: _unary(get, customer_pb2.GetCustomerRequest)})
    else:
        # No reset on release: asyncpg's default runs 4 statements (advisory unlock, CLOSE,
        # RESET, UNLISTEN) every time a connection goes back; SQLAlchemy's pool does not.
        pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10, reset=_keep)
        if kind == "C-read":

            async def read(request: customer_pb2.GetCustomerRequest, context: Any) -> customer_pb2.Customer:
                row = await pool.fetchrow(
                    "SELECT customer_id, full_name, national_id, mobile, status, version FROM cell_customer "
                    "WHERE customer_id = $1",
                    request.customer_id,
                )
                if row is None:
                    await context.abort(grpc.StatusCode.NOT_FOUND, "no such customer")
                return customer_pb2.Customer(
                    customer_id=row[0], full_name=row[1], national_id=row[2], mobile=row[3], status=row[4],
                    etag=f'W/"{row[5]}"',
                )  # fmt: skip

            server = _bare_server({GET_CUSTOMER: _unary(read, customer_pb2.GetCustomerRequest)})
        else:
            server = _bare_server({POST_TRANSACTION: _unary(_poster(pool), product_pb2.PostTransactionRequest)})
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def _poster(pool: asyncpg.Pool) -> Any:
    async def post(request: product_pb2.PostTransactionRequest, context: Any) -> product_pb2.Transaction:
        amount = request.transaction.amount.units * 100
        at = datetime.now(UTC)
        posting_id = f"T-{uuid.uuid4().hex[:20]}"
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT customer_id, state, balance_minor FROM cell_account WHERE account_id = $1 FOR UPDATE",
                request.subscription_id,
            )
            if row is None or row[0] != request.customer_id:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no such account")
            balance, version = await conn.fetchrow(
                "UPDATE cell_account SET balance_minor = balance_minor + $2, version = version + 1 "
                "WHERE account_id = $1 RETURNING balance_minor, version",
                request.subscription_id,
                amount,
            )
            response = product_pb2.Transaction(
                transaction_id=posting_id,
                subscription_id=request.subscription_id,
                direction=request.transaction.direction,
                amount=request.transaction.amount,
                balance_after=money_pb2.Money(currency_code="CNY", units=balance // 100),
            )
            response.post_time.FromDatetime(at)
            await conn.execute(
                "INSERT INTO cell_posting (posting_id, account_id, direction, amount_minor, balance_after_minor, "
                "post_time) VALUES ($1, $2, $3, $4, $5, $6)",
                posting_id, request.subscription_id, int(request.transaction.direction), amount, balance, at,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO cell_outbox (aggregate_id, version, payload, created_at) VALUES ($1, $2, $3, $4)",
                request.subscription_id,
                version,
                response.SerializeToString(),
                at,
            )
        return response

    return post


async def serve_kit(kind: str, port: int) -> None:
    from services.cli import DEV_SECRET
    from services.kit import GrpcServer, TokenVerifier, configure_logging, setup_telemetry

    class InMemory(customer_pb2_grpc.CustomerServiceServicer):
        async def GetCustomer(self, request: customer_pb2.GetCustomerRequest, context: Any) -> customer_pb2.Customer:
            return _customer(request.customer_id)

    configure_logging("bench-kit", "WARNING" if kind == "B-nolog" else "INFO")
    setup_telemetry("bench-kit")
    verifier = TokenVerifier(issuer="zhongtai-dev", audience="zhongtai", hs256_secret=DEV_SECRET, cache_size=10_000)
    server = GrpcServer(
        host="127.0.0.1",
        port=port,
        register=lambda s: customer_pb2_grpc.add_CustomerServiceServicer_to_server(InMemory(), s),
        service_names=["bank.customer.v1.CustomerService"],
        verifier=None if kind == "B-noauth" else verifier,
        validate=kind != "B-noauth",
    )
    await server.start()
    await server.wait()


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "B-notrace":
        os.environ["OTEL_SDK_DISABLED"] = "true"
    if kind.startswith("B"):
        asyncio.run(serve_kit(kind, port))
    else:
        asyncio.run(serve_bare(kind, port, sys.argv[3] if len(sys.argv) > 3 else ""))


if __name__ == "__main__":
    main()
