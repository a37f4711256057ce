"""Benchmark: what each well-kept library would cost where the kit or the gateway hand-writes it
(not a test). The rule (team charter, issue "one platform shape"): keep the hand-written code only
where the library costs more than 20 % of that path's end-to-end time.

Three places, each measured both ways in this one process, CPU time per operation (best of
``--repeat`` rounds of at least ``--min-seconds``), on the contracts' real messages:

* **CloudEvents envelope, writing** — the headers written by hand (``bench/_handwritten.py``, the
  kit's code until 2026-12-06) vs the kit's ``build_record`` on the cloudevents SDK
  (``CloudEvent`` + ``kafka.to_binary``); path: one write RPC's service CPU.
* **CloudEvents envelope, reading** — ``services.kit.events.parse_record`` vs the SDK
  (``kafka.from_binary`` + the payload's protobuf decode); path: one event of the data hub's
  ingest (whole machine's CPU per event).
* **proto → JSON** — the gateway's former printing plan (``bench/_handwritten.py``) vs
  ``json_format.MessageToDict(always_print_fields_with_no_presence=True)`` (what the gateway
  calls now); path: one gateway request (the gateway's own CPU).
* **ASGI layer** — the gateway's plumbing as a raw ASGI app (headers, path, the contract's
  router, query, body, response) vs the same on Starlette (its router, ``Request``,
  ``Response``, default middleware); path: one gateway request.

The paths' end-to-end figures are not re-measured here (each needs the whole stack): they are
the latest measured ones, given with their source, and the targets they are being driven to
(a faster path makes the library's share bigger, so the verdict uses the smaller figure).

    .venv/bin/python bench/libraries.py [--repeat 5] [--min-seconds 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "gen"))

from cloudevents.core.bindings import kafka as ce_kafka  # noqa: E402
from cloudevents.core.formats.json import JSONFormat  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route as StarletteRoute  # noqa: E402

from bank.customer.v1 import customer_pb2, events_pb2  # noqa: E402
from bank.datahub.v1 import datahub_pb2  # noqa: E402
from bench._handwritten import handwritten_record, plan_to_dict  # noqa: E402
from gateway.routing import Router, discover_routes, load_contracts  # noqa: E402
from services.kit.events import _message_class, build_record, parse_record  # noqa: E402

#: The paths' end-to-end CPU per operation (µs): (today's measured figure, its source, the
#: figure the path is being driven to). The verdict divides by the smaller.
PATHS: dict[str, tuple[float, str, float]] = {
    "write": (4_100.0, "CreateCustomer service CPU/request, issue #19 (ghz, c=32)", 1_550.0),
    "ingest": (83.0, "data hub bulk ingest, whole-machine CPU/event, issue #19", 45.0),
    "gateway": (650.0, "gateway CPU/request at c=32, docs/perf/gateway.md", 650.0),
}


def per_op(fn: Callable[[], Any], *, repeat: int, min_seconds: float) -> float:
    """CPU µs per call: best of ``repeat`` rounds, each at least ``min_seconds`` long."""
    n = 1
    while True:  # calibrate
        start = time.process_time()
        for _ in range(n):
            fn()
        if time.process_time() - start >= min_seconds / 5:
            break
        n *= 2
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(n * 5):
            fn()
        best = min(best, (time.process_time() - start) / (n * 5))
    return best * 1e6


def run_async(coro_fn: Callable[[], Any]) -> Callable[[], Any]:
    loop = asyncio.new_event_loop()
    return lambda: loop.run_until_complete(coro_fn())


# -------------------------------------------------------------------------------- envelope


def _event() -> events_pb2.CustomerCreated:
    event = events_pb2.CustomerCreated(customer_id="c0123456789abcdef01234567", version=1)
    event.customer.customer_id = "c0123456789abcdef01234567"
    event.customer.mobile_masked = "138****5678"
    return event


ATTRS = {"source": "/zhongtai/customer", "aggregate_type": "customer", "aggregate_id": "c-1", "version": 7}


def envelope_cases() -> dict[str, Callable[[], Any]]:
    event = _event()
    when = datetime(2026, 12, 6, 8, 0, 0, 123456, tzinfo=UTC)
    fmt = JSONFormat()

    traceparent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"

    def hand_build() -> Any:
        return handwritten_record(event, **ATTRS, event_id="e-1", time=when, traceparent=traceparent)  # type: ignore[arg-type]

    def sdk_build() -> Any:
        return build_record(event, **ATTRS, event_id="e-1", time=when, traceparent=traceparent)  # type: ignore[arg-type]

    record = sdk_build()
    assert record.headers == hand_build().headers and record.value == hand_build().value  # the same bytes
    message = ce_kafka.KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)

    def kit_parse() -> Any:
        return parse_record(record.headers, record.value, key=record.key)

    def sdk_parse() -> Any:
        ce = ce_kafka.from_binary(message, fmt)
        data = ce.get_data()  # (the SDK hands a payload that happens to be valid UTF-8 back as str)
        return _message_class(ce.get_type()).FromString(data.encode() if isinstance(data, str) else data)

    return {"build hand": hand_build, "build sdk": sdk_build, "parse kit": kit_parse, "parse sdk": sdk_parse}


# -------------------------------------------------------------------------------- proto → JSON


def json_cases() -> dict[str, Callable[[], Any]]:
    customer = customer_pb2.Customer(
        customer_id="c0123456789abcdef01234567", full_name="王**", national_id="110101********1234",
        mobile="138****5678", email="w***@example.com", status=customer_pb2.Customer.STATUS_ACTIVE,
        kyc_verified=True, risk_tolerance=3, etag='W/"0123456789abcdef0123"', version=4,
    )  # fmt: skip
    customer.create_time.FromDatetime(datetime(2026, 1, 2, tzinfo=UTC))
    customer.update_time.FromDatetime(datetime(2026, 1, 3, tzinfo=UTC))
    view = datahub_pb2.CustomerView()
    json_format.ParseDict(_view_sample(), view, ignore_unknown_fields=True)
    options = {"always_print_fields_with_no_presence": True}
    assert plan_to_dict(customer) == json_format.MessageToDict(customer, **options)
    assert plan_to_dict(view) == json_format.MessageToDict(view, **options)
    return {
        "Customer plan": lambda: plan_to_dict(customer),
        "Customer json_format": lambda: json_format.MessageToDict(customer, **options),
        "CustomerView plan": lambda: plan_to_dict(view),
        "CustomerView json_format": lambda: json_format.MessageToDict(view, **options),
    }


def _view_sample() -> dict[str, Any]:
    """A realistic view: every top-level message field filled with its zero-valued sub-message
    plus a few holdings (field names looked up, so the sample follows the contract)."""
    sample: dict[str, Any] = {"customerId": "c0123456789abcdef01234567"}
    for fd in datahub_pb2.CustomerView.DESCRIPTOR.fields:
        if fd.message_type is not None and not fd.message_type.full_name.startswith("google.protobuf."):
            sample[fd.json_name] = [{}, {}, {}] if fd.is_repeated else {}
    return sample


# -------------------------------------------------------------------------------- ASGI


def _routes() -> list[Any]:
    return discover_routes(load_contracts())


def raw_app(router: Router) -> Callable[..., Any]:
    """The gateway's own plumbing, without its policy (spans, auth, quotas, backends)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1").split("?", 1)[0] if raw_path else scope["path"]
        match = router.match(scope["method"], path)
        query = parse_qsl(scope["query_string"].decode("latin-1"))
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        assert match is not None and headers and query is not None
        out = b'{"ok":true}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": out})

    return app


def starlette_app(routes: list[Any]) -> Starlette:
    async def endpoint(request: Request) -> Response:
        body = await request.body()
        assert request.headers.get("authorization") and request.query_params is not None and body is not None
        return Response(b'{"ok":true}', media_type="application/json")

    def path_of(template: str) -> str:
        return re.sub(r"\{([\w.]+)(=[^}]*)?\}", lambda m: "{" + m.group(1).replace(".", "_") + "}", template)

    seen: set[tuple[str, str]] = set()
    table = []
    for route in routes:
        path = path_of(route.template.raw) + (f":{route.template.verb}" if route.template.verb else "")
        if (route.http_method, path) in seen:
            continue
        seen.add((route.http_method, path))
        table.append(StarletteRoute(path, endpoint, methods=[route.http_method]))
    return Starlette(routes=table)


def asgi_cases() -> dict[str, Callable[[], Any]]:
    routes = _routes()
    raw, star = raw_app(Router(routes)), starlette_app(routes)
    body = (
        '{"customer":{"fullName":"王小明","birthDate":{"year":1990,"month":1,"day":2},"mobile":"13800000000"}}'.encode()
    )
    requests = [
        ("GET", "/v1/customers/c0123456789abcdef01234567", b"", b""),
        ("POST", "/v1/customers", b"", body),
    ]

    def call(app: Any, method: str, path: str, qs: bytes, payload: bytes) -> Callable[[], Any]:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": qs, "root_path": "",
            "headers": [
                (b"host", b"gateway"), (b"authorization", b"Bearer " + b"x" * 300),
                (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                (b"idempotency-key", b"k-1"), (b"traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"),
            ],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8080),
        }  # fmt: skip
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": payload, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def once() -> None:
            sent.clear()
            await app(dict(scope), receive, send)
            assert sent[0]["status"] == 200, sent[0]

        return run_async(once)

    cases: dict[str, Callable[[], Any]] = {}
    for method, path, qs, payload in requests:
        cases[f"{method} raw"] = call(raw, method, path, qs, payload)
        cases[f"{method} starlette"] = call(star, method, path, qs, payload)
    return cases


# -------------------------------------------------------------------------------- report


def verdict(place: str, extra_us: float, path: str) -> str:
    today, source, target = PATHS[path]
    share = extra_us / min(today, target)
    keep = "KEEP hand-written" if share > 0.20 else "USE the library"
    return (
        f"verdict {place}: library +{extra_us:.1f} µs = {share:.1%} of {min(today, target):,.0f} µs "
        f"({source}: {today:,.0f} today, {target:,.0f} target) -> {keep}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=0.3)
    args = parser.parse_args()
    measure = {"repeat": args.repeat, "min_seconds": args.min_seconds}
    results: dict[str, float] = {}
    for group in (envelope_cases(), json_cases(), asgi_cases()):
        for name, fn in group.items():
            results[name] = per_op(fn, **measure)
            print(f"{name:28s} {results[name]:8.1f} µs CPU/op", flush=True)
    print()
    print(verdict("envelope write", results["build sdk"] - results["build hand"], "write"))
    print(verdict("envelope read", results["parse sdk"] - results["parse kit"], "ingest"))
    json_extra = max(
        results["Customer json_format"] - results["Customer plan"],
        results["CustomerView json_format"] - results["CustomerView plan"],
    )
    print(verdict("proto->JSON", json_extra, "gateway"))
    asgi_extra = max(results["GET starlette"] - results["GET raw"], results["POST starlette"] - results["POST raw"])
    print(verdict("ASGI layer", asgi_extra, "gateway"))


if __name__ == "__main__":
    main()
