"""Websocket routes of the builds app (included by ``buildhub.routing``)."""

from django.urls import path

from builds.consumers import JobProgressConsumer

websocket_urlpatterns = [
    path("ws/jobs/<str:job_id>/", JobProgressConsumer.as_asgi()),
]
