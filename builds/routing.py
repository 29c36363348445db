"""Websocket routes of the builds app (included by ``buildhub.routing``)."""

from django.urls import path

from builds.consumers import JobProgressConsumer
from builds.dashboard_ws import DashboardConsumer

websocket_urlpatterns = [
    path("ws/jobs/<str:job_id>/", JobProgressConsumer.as_asgi()),
    path("ws/admin/dashboard/", DashboardConsumer.as_asgi()),
]
