"""Extra routes for error-shape tests: a view that reads the body and one that crashes."""

from django.urls import path
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.response import Response

from buildhub.urls import urlpatterns as project_urlpatterns


@api_view(["POST"])
@authentication_classes([])
@permission_classes([])
def echo(request):
    return Response({"received": request.data})


def crash(request):
    raise RuntimeError("secret internal detail")


urlpatterns = [
    path("api/test/echo/", echo),
    path("api/test/crash/", crash),
    *project_urlpatterns,
]
