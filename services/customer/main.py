"""The customer capability, declared on the kit (``zhongtai customer``, ``zhongtai relay --service
customer``, ``zhongtai migrate customer``): its settings, migrations, gRPC service and wiring.
The process itself (engine, migrations, topics, outbox relay, server, health, signals, shutdown
order) is the kit's: :mod:`services.kit.service`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc

from bank.customer.v1 import customer_pb2, customer_pb2_grpc, operations_pb2
from services.customer.api import CustomerApi
from services.customer.config import CustomerSettings, build_crypto
from services.customer.service import Clock, CustomerService
from services.customer.store import PiiCodec
from services.kit import Capability, Runtime, Wiring, outbox_status_handler

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = customer_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name
#: Its outbox status (ops:admin), served by the kit (ADR 0039).
OPERATIONS_NAME = operations_pb2.DESCRIPTOR.services_by_name["CustomerOperationsService"].full_name

__all__ = ["CAPABILITY", "CustomerSettings", "build_crypto", "migrate", "relay", "run", "serve"]


async def wire(runtime: Runtime[CustomerSettings]) -> Wiring:
    settings = runtime.settings
    cipher, blind = build_crypto(settings)
    service = CustomerService(
        runtime.engine,
        PiiCodec(cipher, blind),
        after_commit=runtime.after_commit,
        clock=Clock(ZoneInfo(settings.business_timezone)),
        risk_validity=timedelta(days=settings.risk_assessment_validity_days),
    )
    servicer = CustomerApi(service)
    outbox = outbox_status_handler(runtime.engine, OPERATIONS_NAME, "customer")

    def register(server: grpc.aio.Server) -> None:
        customer_pb2_grpc.add_CustomerServiceServicer_to_server(servicer, server)
        server.add_generic_rpc_handlers((outbox,))

    return Wiring(register=register)


CAPABILITY = Capability(
    name="customer",
    settings=CustomerSettings,
    migrations=MIGRATIONS,
    grpc_services=[SERVICE_NAME, OPERATIONS_NAME],
    wire=wire,
)
serve, migrate, relay, run = CAPABILITY.commands()
