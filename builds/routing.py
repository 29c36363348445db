from django.urls import path

from builds.dashboard_ws import DashboardConsumer

websocket_urlpatterns = [
    path("ws/admin/dashboard/", DashboardConsumer.as_asgi()),
]
