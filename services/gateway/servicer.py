"""HeadshotService (tenants' API) and AdminService (operator's API), assembled.

Each part lives in its own module: orders (`orders_api`), photos and the upload pipeline
(`photos_api`), results (`results_api`), previews and styles (`previews_api`), and the
operator's API (`admin_api`); state changes go through `orders`, jobs are built by `jobs`.
"""

from __future__ import annotations

from headshots.v1 import headshots_pb2_grpc as pb_grpc
from services.gateway.admin_api import AdminServicer
from services.gateway.deps import Deps
from services.gateway.orders_api import OrdersApi
from services.gateway.photos_api import PhotosApi
from services.gateway.previews_api import PreviewsApi
from services.gateway.results_api import ResultsApi


class HeadshotServicer(
    OrdersApi, PhotosApi, ResultsApi, PreviewsApi, pb_grpc.HeadshotServiceServicer
):
    pass


__all__ = ["AdminServicer", "Deps", "HeadshotServicer"]
