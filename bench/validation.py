"""Benchmark: request validation, protovalidate (CEL) vs the native fast path (not a test).

Validates representative requests (golden examples under tests/contract/examples) ``--n`` times
each with ``protovalidate.Validator().collect_violations`` and 20 × ``--n`` times with
``services.kit._fastvalidate.collect`` (what ``validate_request`` runs), in one process, after a
warm-up (plans and CEL programs compiled). Checks both give the same violations, then prints
µs per validation (CPU time, best of ``--repeat`` rounds) and the speed-up. The fast path
memoises regex answers for short strings (ids and currency codes repeat); "cold" clears that
memo before every validation (the cost for never-seen strings, clearing included), "warm" does
not (the same request again).

    .venv/bin/python bench/validation.py [--n 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "gen"))

import protovalidate  # noqa: E402
from google.protobuf import descriptor_pool, json_format, message_factory  # noqa: E402
from google.protobuf.message import Message  # noqa: E402

import bank.customer.v1.customer_pb2  # noqa: E402
import bank.product.v1.product_pb2  # noqa: E402, F401
from services.kit import _fastvalidate  # noqa: E402
from services.kit.validation import _path  # noqa: E402

EXAMPLES = REPO / "tests" / "contract" / "examples"
CASES = [
    ("CreateCustomerRequest (valid)", "valid/create_customer.json"),
    ("CreateCustomerRequest (invalid: email, national_id)", "invalid/create_customer_bad_email_and_id.json"),
    ("CreateCustomerRequest (invalid: no customer)", "invalid/create_customer_no_customer.json"),
    ("UpdateCustomerRequest (invalid: clears mobile)", "invalid/update_customer_clear_mobile.json"),
    ("PostTransactionRequest (valid)", "valid/post_transaction.json"),
    ("CreateProductRequest (valid)", "valid/create_product.json"),
    ("GetCustomerRequest (invalid id)", "invalid/get_customer_bad_id.json"),
]


def load(relative: str) -> Message:
    spec = json.loads((EXAMPLES / relative).read_text(encoding="utf-8"))
    cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(spec["message"]))
    return json_format.ParseDict(spec["json"], cls())


def cpu_us(fn: Callable[[], Any], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def cold(message: Message) -> list[tuple[str, str, str]]:
    _fastvalidate.clear_memos()
    return _fastvalidate.collect(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50, help="protovalidate validations per round (fast path: 20x)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (the best one is reported)")
    args = parser.parse_args()

    validator = protovalidate.Validator()
    print(f"python {platform.python_version()}, protovalidate 1.x (cel-python), n={args.n}, best of {args.repeat}")
    print(
        f"{'request':<54} {'violations':>10} {'protovalidate':>15} {'fast cold':>11} {'fast warm':>11}"
        f" {'speed-up cold':>14} {'warm':>6}"
    )
    total_slow = total_fast = total_warm = 0.0
    for label, relative in CASES:
        message = load(relative)
        slow_result = [(_path(v), v.proto.rule_id, v.proto.message) for v in validator.collect_violations(message)]
        fast_result = _fastvalidate.collect(message)
        assert fast_result == slow_result, (label, fast_result, slow_result)
        slow = cpu_us(lambda m=message: validator.collect_violations(m), args.n, args.repeat)
        fast = cpu_us(lambda m=message: cold(m), args.n * 20, args.repeat)
        warm = cpu_us(lambda m=message: _fastvalidate.collect(m), args.n * 20, args.repeat)
        total_slow += slow
        total_fast += fast
        total_warm += warm
        print(
            f"{label:<54} {len(fast_result):>10} {slow:>12.0f} µs {fast:>8.1f} µs {warm:>8.1f} µs"
            f" {slow / fast:>13.0f}x {slow / warm:>5.0f}x"
        )
    n = len(CASES)
    print(
        f"{'mean over the requests above':<54} {'':>10} {total_slow / n:>12.0f} µs {total_fast / n:>8.1f} µs"
        f" {total_warm / n:>8.1f} µs {total_slow / total_fast:>13.0f}x {total_slow / total_warm:>5.0f}x"
    )


if __name__ == "__main__":
    main()
