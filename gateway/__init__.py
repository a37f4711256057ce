"""The HTTP edge of Zhongtai: REST/JSON for channel apps, transcoded to gRPC from the contracts.

Every route is built at start-up from the ``google.api.http`` annotations in the descriptor
pool (see :mod:`gateway.routing`); nothing here knows a service by name.
"""
