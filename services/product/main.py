"""The product capability, declared on the kit (``zhongtai product``, ``zhongtai relay --service
product``, ``zhongtai migrate product``): its settings, migrations, gRPC service and wiring. The
process itself is the kit's: :mod:`services.kit.service`.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from bank.product.v1 import operations_pb2, product_pb2, product_pb2_grpc
from services.kit import Capability, Runtime, Wiring, outbox_status_handler
from services.product.api import ProductApi
from services.product.config import ProductSettings
from services.product.customers import CustomerDirectory
from services.product.replica import eligibility_replica
from services.product.usecases import ProductUseCases

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = product_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name
#: Its outbox status (ops:admin), served by the kit (ADR 0039).
OPERATIONS_NAME = operations_pb2.DESCRIPTOR.services_by_name["ProductOperationsService"].full_name

__all__ = ["CAPABILITY", "MIGRATIONS", "ProductSettings", "migrate", "relay", "run", "serve"]


async def wire(runtime: Runtime[ProductSettings]) -> Wiring:
    settings = runtime.settings
    customers = CustomerDirectory(
        settings.customer_target,
        settings.service_tokens(),
        deadline_s=settings.customer_deadline_s,
        lookups_in_flight=settings.customer_lookups_in_flight,
    )
    freshness, replica = (
        eligibility_replica(settings, runtime.engine) if settings.product_eligibility_replica else (None, [])
    )
    usecases = ProductUseCases(runtime.engine, customers, after_commit=runtime.after_commit, replica=freshness)
    servicer = ProductApi(usecases)
    outbox = outbox_status_handler(runtime.engine, OPERATIONS_NAME, "product")

    def register(server: grpc.aio.Server) -> None:
        product_pb2_grpc.add_ProductServiceServicer_to_server(servicer, server)
        server.add_generic_rpc_handlers((outbox,))

    return Wiring(register=register, components=[customers], after_serving=replica)


CAPABILITY = Capability(
    name="product",
    settings=ProductSettings,
    migrations=MIGRATIONS,
    grpc_services=[SERVICE_NAME, OPERATIONS_NAME],
    wire=wire,
)
serve, migrate, relay, run = CAPABILITY.commands()
