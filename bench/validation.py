"""Benchmark: the cost of request validation per message (not a test).

Measures what every RPC runs in the kit interceptor, ``services.kit.validation.violations_of``,
and the library call under it, ``protovalidate.Validator().collect_violations``, on
representative requests (golden examples under tests/contract/examples), valid and invalid:

* **first call**: the first validation of that message type in a fresh process (the rules of the
  type are compiled then), CPU time, median of ``--first`` processes;
* **warm**: the same message again and again once compiled, CPU time per call, best of
  ``--repeat`` rounds of at least ``--min-seconds`` each.

Nothing here depends on how validation is implemented, so the same script measures any version
of the kit (run it on two commits back to back to compare them).

    .venv/bin/python bench/validation.py [--repeat 5] [--first 5] [--min-seconds 0.2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "gen"))

import protovalidate  # noqa: E402
from google.protobuf import descriptor_pool, json_format, message_factory  # noqa: E402
from google.protobuf.message import Message  # noqa: E402

import bank.customer.v1.customer_pb2  # noqa: E402
import bank.datahub.v1.datahub_pb2  # noqa: E402
import bank.product.v1.product_pb2  # noqa: E402, F401
from services.kit.validation import violations_of  # noqa: E402

EXAMPLES = REPO / "tests" / "contract" / "examples"
CASES = [
    ("CreateCustomerRequest (valid)", "valid/create_customer.json"),
    ("CreateCustomerRequest (invalid: email, national_id)", "invalid/create_customer_bad_email_and_id.json"),
    ("CreateCustomerRequest (invalid: 4 missing fields)", "invalid/create_customer_missing_fields.json"),
    ("CreateCustomerRequest (invalid: no customer)", "invalid/create_customer_no_customer.json"),
    ("UpdateCustomerRequest (invalid: clears mobile)", "invalid/update_customer_clear_mobile.json"),
    ("PostTransactionRequest (valid)", "valid/post_transaction.json"),
    ("CreateProductRequest (valid)", "valid/create_product.json"),
    ("CreateProductRequest (invalid: terms)", "invalid/create_product_bad_terms.json"),
    ("GetCustomerRequest (invalid id)", "invalid/get_customer_bad_id.json"),
]


def load(relative: str) -> Message:
    spec = json.loads((EXAMPLES / relative).read_text(encoding="utf-8"))
    cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(spec["message"]))
    return json_format.ParseDict(spec["json"], cls())


def warm_us(fn: Callable[[], Any], repeat: int, min_seconds: float) -> float:
    """CPU µs per call: calls doubled until a round lasts ``min_seconds``, best of ``repeat`` rounds."""
    fn()
    n = 1
    while True:
        start = time.process_time()
        for _ in range(n):
            fn()
        if time.process_time() - start >= min_seconds:
            break
        n *= 2
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def first_call(relative: str, library: bool) -> float:
    """CPU µs of the first validation of this message type, in this (fresh) process."""
    message = load(relative)
    fn: Callable[[], Any] = (
        (lambda: protovalidate.Validator().collect_violations(message)) if library else (lambda: violations_of(message))
    )
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1e6


def first_call_us(relative: str, library: bool, processes: int) -> float:
    samples = []
    for _ in range(processes):
        cmd = [sys.executable, __file__, "--first-call", relative]
        if library:
            cmd.append("--library")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        samples.append(float(out.strip()))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="warm rounds (the best one is reported)")
    parser.add_argument("--first", type=int, default=5, help="fresh processes per first-call figure (median)")
    parser.add_argument("--min-seconds", type=float, default=0.2, help="CPU seconds of one warm round, at least")
    parser.add_argument("--first-call", metavar="EXAMPLE", help=argparse.SUPPRESS)
    parser.add_argument("--library", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_call:
        print(first_call(args.first_call, args.library))
        return

    validator = protovalidate.Validator()
    print(
        f"python {platform.python_version()}, protobuf {version('protobuf')}, "
        f"protovalidate {version('protovalidate')}; "
        f"CPU µs per message (first call: median of {args.first} processes; warm: best of {args.repeat})"
    )
    print(
        f"{'request':<52} {'viol.':>5} | {'kit first':>10} {'kit warm':>9} | {'library first':>13} {'library warm':>12}"
    )
    kit_warm_sum = lib_warm_sum = 0.0
    for label, relative in CASES:
        message = load(relative)
        found = violations_of(message)
        kit_first = first_call_us(relative, False, args.first)
        kit_warm = warm_us(lambda m=message: violations_of(m), args.repeat, args.min_seconds)
        lib_first = first_call_us(relative, True, args.first)
        lib_warm = warm_us(lambda m=message: validator.collect_violations(m), args.repeat, args.min_seconds)
        kit_warm_sum += kit_warm
        lib_warm_sum += lib_warm
        print(
            f"{label:<52} {len(found):>5} | {kit_first:>10.0f} {kit_warm:>9.1f} | {lib_first:>13.0f} {lib_warm:>12.1f}"
        )
    n = len(CASES)
    print(f"{'mean warm':<52} {'':>5} | {'':>10} {kit_warm_sum / n:>9.1f} | {'':>13} {lib_warm_sum / n:>12.1f}")


if __name__ == "__main__":
    main()
