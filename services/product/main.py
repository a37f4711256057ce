"""The product capability, declared on the kit (``zhongtai product``, ``zhongtai relay --service
product``, ``zhongtai migrate product``): its settings, migrations, gRPC service and wiring. The
process itself is the kit's: :mod:`services.kit.service`.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from pydantic import Field

from bank.product.v1 import operations_pb2, product_pb2, product_pb2_grpc
from services.kit import CallerSettings, Capability, Runtime, Wiring, outbox_status_handler
from services.product.api import ProductApi
from services.product.customers import CustomerDirectory
from services.product.usecases import ProductUseCases

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = product_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name
#: Its outbox status (ops:admin), served by the kit (ADR 0039).
OPERATIONS_NAME = operations_pb2.DESCRIPTOR.services_by_name["ProductOperationsService"].full_name


class ProductSettings(CallerSettings):
    """``ZT_`` settings of the product service (on top of the shared ones and the ``ZT_SERVICE_*``
    ones of its own token, :class:`services.kit.clients.CallerSettings`)."""

    service_name: str = "product"
    #: Overall budget of one customer lookup, retries included (ZT_CUSTOMER_DEADLINE_S).
    customer_deadline_s: float = Field(2.0, gt=0, le=60)
    #: The product service's own client id and scopes when it calls other services.
    service_client_id: str = "zhongtai-product"
    service_token_scopes: str = "customers:read"  # noqa: S105 - scope names, not a secret


async def wire(runtime: Runtime[ProductSettings]) -> Wiring:
    settings = runtime.settings
    customers = CustomerDirectory(
        settings.customer_target, settings.service_tokens(), deadline_s=settings.customer_deadline_s
    )
    servicer = ProductApi(ProductUseCases(runtime.engine, customers, after_commit=runtime.after_commit))
    outbox = outbox_status_handler(runtime.engine, OPERATIONS_NAME, "product")

    def register(server: grpc.aio.Server) -> None:
        product_pb2_grpc.add_ProductServiceServicer_to_server(servicer, server)
        server.add_generic_rpc_handlers((outbox,))

    return Wiring(register=register, components=[customers])


CAPABILITY = Capability(
    name="product",
    settings=ProductSettings,
    migrations=MIGRATIONS,
    grpc_services=[SERVICE_NAME, OPERATIONS_NAME],
    wire=wire,
)
serve, migrate, relay, run = CAPABILITY.commands()
