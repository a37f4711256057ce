"""A real outbox relay process for the crash tests.

    python relay_main.py DB_URL BOOTSTRAP MODE

MODE ``normal`` publishes until SIGTERM; ``crash-before-send`` SIGKILLs itself after reading
rows and before sending them; ``crash-after-send`` SIGKILLs itself after the broker acked and
before the rows are marked published. The crash points wrap the relay's own send step; nothing
else in the relay is changed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from services.kit.db import EngineLifecycle, create_engine
from services.kit.kafka import make_producer
from services.kit.lifecycle import run_until_signalled
from services.kit.outbox import OutboxRelay


def main() -> None:
    db_url, bootstrap, mode = sys.argv[1:4]
    original = OutboxRelay._send

    async def send_with_crash_point(self: OutboxRelay, rows):  # type: ignore[no-untyped-def]
        if mode == "crash-before-send":
            os.kill(os.getpid(), signal.SIGKILL)
        await original(self, rows)
        if mode == "crash-after-send":
            os.kill(os.getpid(), signal.SIGKILL)

    OutboxRelay._send = send_with_crash_point  # type: ignore[method-assign]

    async def serve() -> None:
        engine = create_engine(db_url)
        relay = OutboxRelay(
            engine, make_producer(bootstrap, client_id="test-relay"), owns_producer=True, poll_interval_s=0.1
        )
        print("relay up", flush=True)
        await run_until_signalled([EngineLifecycle(engine), relay])

    asyncio.run(serve())


if __name__ == "__main__":
    main()
