from django.urls import path

from buildevents.consumers import BuildStatusConsumer

websocket_urlpatterns = [
    path("ws/admin/build-status/", BuildStatusConsumer.as_asgi()),
]
