"""Benchmark: what the kit's per-call work costs, part by part, in one process (not a test).

    .venv/bin/python -m bench.kit_call [--calls 20000]

Runs :class:`services.kit.grpc_server.KitCall` (the wrapper around every unary handler) on a
GetCustomer request with a fake servicer context, as a service is configured (JSON access log to
a file, an SDK tracer provider without exporter, token cache on: spans carry ids only and the
histogram is skipped, ADR 0030), then the same as if an exporter and a metric reader read them
(full SDK spans, the RED histogram), then each part alone: the span, the token check,
protovalidate, the histogram, the access log line. Prints CPU
µs per call (``time.process_time``), the median of 5 repetitions. No gRPC, no network: the
transport's own cost is cells A/B of ``bench/services.py``; this splits the kit's share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bank.customer.v1 import customer_pb2
from services.cli import DEV_SECRET
from services.kit import TokenVerifier, configure_logging, mint_token, setup_telemetry, telemetry
from services.kit import grpc_server as gs
from services.kit.auth import authorize
from services.kit.validation import validate_request

METHOD = "/bank.customer.v1.CustomerService/GetCustomer"


class FakeContext:
    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"), ("user-agent", "grpc-go/1.60.1"))

    def invocation_metadata(self) -> Any:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:51234"

    def code(self) -> Any:
        return None


def per_call_us(fn: Callable[[], Any], calls: int) -> float:
    samples = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            fn()
        samples.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    log_file = open(os.path.join(tempfile.mkdtemp(prefix="zt-bench-kit-"), "access.log"), "w")  # noqa: SIM115
    configure_logging("bench", "INFO", stream=log_file)
    setup_telemetry("bench")
    token = mint_token(DEV_SECRET, ["customers:read"], client_id="bench")
    verifier = TokenVerifier(issuer="zhongtai-dev", audience="zhongtai", hs256_secret=DEV_SECRET, cache_size=10_000)
    request = customer_pb2.GetCustomerRequest(customer_id="c0123456789abcdef")
    reply = customer_pb2.Customer(customer_id="c0123456789abcdef")
    context = FakeContext(token)

    async def behavior(_request: Any, _context: Any) -> Any:
        return reply

    full = gs.KitCall(METHOD, behavior, verifier, validate=True)
    loop = asyncio.new_event_loop()

    def run(coro_fn: Callable[[], Any]) -> Callable[[], Any]:
        def step() -> None:
            coro = coro_fn()
            with contextlib.suppress(StopIteration):
                coro.send(None)

        return step

    def span_only() -> None:
        span = gs._tracer.start_span(METHOD, kind=gs.SpanKind.SERVER, attributes={"rpc.system": "grpc"})
        token_ = gs.otel_context.attach(gs.trace.set_span_in_context(span))
        gs.otel_context.detach(token_)
        span.end()

    def auth_only() -> None:
        principal = verifier.verify(token)
        authorize(principal, METHOD)

    def read(spans: bool, step: Callable[[], Any]) -> Callable[[], Any]:
        def with_readers() -> None:
            telemetry._read.update(spans=spans, metrics=spans)
            try:
                step()
            finally:
                telemetry._read.update(spans=False, metrics=False)

        return with_readers

    kit = run(lambda: full.handle(request, context))
    parts: dict[str, Callable[[], Any]] = {
        "the handler alone (a coroutine returning a message)": run(lambda: behavior(request, context)),
        "KitCall: everything, nothing exported (ids-only span, no histogram)": kit,
        "KitCall: everything, as if exported (SDK span + histogram)": read(True, kit),
        "  span (start, make current, end)": span_only,
        "  token check (cached) + scopes": auth_only,
        "  protovalidate": lambda: validate_request(request),
        "  RED histogram record": lambda: gs._duration.record(
            1.0, {"rpc.method": METHOD, "rpc.grpc.status_code": "OK"}
        ),
        "  access log line": lambda: gs.log.info("rpc", rpc=METHOD, code="OK", duration_ms=0.42, client_id="bench"),
        "  metadata dict + peer attributes": lambda: gs._peer_attributes(
            context,
            {k: v for k, v in context.invocation_metadata()},  # type: ignore[arg-type]
        ),
    }
    for name, fn in parts.items():
        fn()
        print(f"{per_call_us(fn, args.calls):8.1f} µs  {name}")
    loop.close()


if __name__ == "__main__":
    main()
