"""The gRPC servicer of ``bank.product.v1.ProductService``: request → use case → response.

Authentication, the contract's required scopes, protovalidate and the translation of
``services.kit.errors`` to ``google.rpc.Status`` happen in the kit's per-call wrapper; no
business rule lives here. The incoming call's remaining deadline bounds the customer lookup.
"""

from __future__ import annotations

import grpc

from bank.product.v1 import product_pb2, product_pb2_grpc
from services.product.usecases import ProductUseCases


class ProductApi(product_pb2_grpc.ProductServiceServicer):
    def __init__(self, usecases: ProductUseCases) -> None:
        self._uc = usecases

    async def CreateProduct(
        self, request: product_pb2.CreateProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.Product:
        return await self._uc.create_product(request)

    async def PublishProduct(
        self, request: product_pb2.PublishProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.Product:
        return await self._uc.publish_product(request)

    async def RetireProduct(
        self, request: product_pb2.RetireProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.Product:
        return await self._uc.retire_product(request)

    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.Product:
        return await self._uc.get_product(request.product_id)

    async def ListProducts(
        self, request: product_pb2.ListProductsRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.ListProductsResponse:
        return await self._uc.list_products(request)

    async def CheckEligibility(
        self, request: product_pb2.CheckEligibilityRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.EligibilityResult:
        return await self._uc.check_eligibility(request, time_remaining=context.time_remaining())

    async def CreateSubscription(
        self, request: product_pb2.CreateSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.Subscription:
        return await self._uc.create_subscription(request, time_remaining=context.time_remaining())

    async def ListSubscriptions(
        self, request: product_pb2.ListSubscriptionsRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.ListSubscriptionsResponse:
        return await self._uc.list_subscriptions(request)

    async def CloseSubscription(
        self, request: product_pb2.CloseSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.Subscription:
        return await self._uc.close_subscription(request)

    async def PostTransaction(
        self, request: product_pb2.PostTransactionRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.Transaction:
        return await self._uc.post_transaction(request)

    async def ListTransactions(
        self, request: product_pb2.ListTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> product_pb2.ListTransactionsResponse:
        return await self._uc.list_transactions(request)
