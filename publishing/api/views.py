from django.db import transaction
from django.http import FileResponse, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from buildhub.errors import ServiceError
from buildhub.net import client_ip
from buildhub.throttling import AccountBudgetMixin, refund_account_budget
from builds.api.permissions import caller_account, request_account
from builds.api.serializers import JobSerializer
from builds.api.views import READ_BUDGET, SUBMIT_BUDGET
from builds.choices import TokenScope
from builds.models import Job
from publishing import (
    artifacts,
    checkins,
    codepush,
    device_limits,
    edge,
    expo,
    health,
    releases,
    services,
    signing,
    sources,
)
from publishing.api.serializers import (
    AppSerializer,
    ArtifactSerializer,
    BuildRequestSerializer,
    BuildSerializer,
    CreateVersionSerializer,
    DeploymentSerializer,
    DeviceSerializer,
    DirectUploadRequestSerializer,
    DirectUploadSerializer,
    PublishSerializer,
    ReleaseHealthSerializer,
    ReleaseSerializer,
    RollbackSerializer,
    SigningKeyRequestSerializer,
    SigningKeySerializer,
    SourceUploadRequestSerializer,
    SourceUploadSerializer,
    UpdateCheckQuerySerializer,
    UpdateSerializer,
    VersionSerializer,
)
from publishing.builds import BUILD_KINDS
from publishing.choices import ArtifactKind, Environment, Visibility
from publishing.models import App, AppSigningKey, Artifact, Device

READ, WRITE, PUBLISH = TokenScope.BUILDS_READ, TokenScope.BUILDS_WRITE, TokenScope.PUBLISH
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around an uploaded file


class AppViewSet(
    AccountBudgetMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """The account's apps; each has a public ``app_key`` its devices send as ``X-App-Key``."""

    serializer_class = AppSerializer
    lookup_field = "slug"
    required_scopes = {
        "list": READ,
        "retrieve": READ,
        "versions": READ,
        "create": WRITE,
        "update": WRITE,
        "partial_update": WRITE,
        "create_version": PUBLISH,
        "publish": PUBLISH,
        "rollback": PUBLISH,
        "release_health": READ,
        "sources": WRITE,
        "direct_source": WRITE,
        "complete_source": WRITE,
        "code_signing": READ,
        "set_code_signing": PUBLISH,
        "code_signing_certificate": READ,
        "deployments": READ,
        "rotate_deployment": PUBLISH,
    }
    account_rates = {"publish": SUBMIT_BUDGET}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return App.objects.none()
        return App.objects.filter(account=request_account(self.request)).select_related("account")

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.action in {"create", "update", "partial_update"}:
            context["account"] = request_account(self.request)
        return context

    def perform_create(self, serializer):
        serializer.save(account=request_account(self.request))

    @extend_schema(responses=VersionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def versions(self, request, slug=None):
        app = self.get_object()
        page = self.paginate_queryset(
            app.versions.prefetch_related("assets", "builds").order_by("-number")
        )
        data = VersionSerializer(page, many=True, context=self.get_serializer_context()).data
        return self.get_paginated_response(data)

    @extend_schema(request=CreateVersionSerializer, responses={201: VersionSerializer})
    @versions.mapping.post
    def create_version(self, request, slug=None):
        app = self.get_object()
        body = CreateVersionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = services.create_version(app, body.validated_data["build"])
        return Response(
            VersionSerializer(version, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(request=PublishSerializer, responses={202: JobSerializer})
    @action(detail=True, methods=["post"], url_path=r"versions/(?P<number>[0-9]+)/publish")
    def publish(self, request, slug=None, number=None):
        """Queue the publish job of a ready version (202 with the job)."""
        app = self.get_object()
        version = app.versions.filter(number=number).first()
        if version is None:
            raise ServiceError("No such version.", code="not_found", status=404)
        body = PublishSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        job, created = services.publish_version(
            version,
            data["target_environment"],
            by=str(request.user),
            staff=request.user.is_staff,
            idempotency_key=request.headers.get("Idempotency-Key", ""),
            mandatory=data["mandatory"],
            rollout_percent=data["rollout_percent"],
            target_binary_range=data["target_binary_range"],
        )
        if not created:
            refund_account_budget(request)  # a repeated Idempotency-Key queued nothing
        return Response(
            JobSerializer(job, context=self.get_serializer_context()).data,
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(
        request={"multipart/form-data": SourceUploadRequestSerializer},
        responses={201: SourceUploadSerializer},
    )
    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser])
    def sources(self, request, slug=None):
        """Upload a .tar.gz or .zip of the app's source for builds (multipart field ``file``)."""
        app = self.get_object()
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared.isdigit():  # refuse before reading a body that cannot fit
            limit = app.account.effective_limits().max_source_upload_bytes
            if int(declared) > limit + MULTIPART_OVERHEAD:
                raise sources.upload_limit_error(app.account, int(declared))
        upload = services.upload_source(app, request.FILES.get("file"))
        return Response(SourceUploadSerializer(upload).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=DirectUploadRequestSerializer, responses={201: DirectUploadSerializer})
    @action(detail=True, methods=["post"], url_path="sources/direct")
    def direct_source(self, request, slug=None):
        """Start an upload that goes straight to the bucket (S3 storage): POST the answer's
        ``upload.fields`` and then the archive as ``file`` to ``upload.url``, then POST to
        ``complete_url``. The archive never passes through BuildHub's web processes."""
        app = self.get_object()
        body = DirectUploadRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        upload, form = services.start_direct_upload(app, **body.validated_data)
        return Response(
            DirectUploadSerializer(upload, context={"form": form}).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(request=None, responses={200: SourceUploadSerializer})
    @action(
        detail=True,
        methods=["post"],
        url_path=r"sources/(?P<upload_id>[0-9a-fA-F-]{36})/complete",
    )
    def complete_source(self, request, slug=None, upload_id=None):
        """Check a direct upload's archive in the bucket (as a posted one is checked) and
        make it usable by builds; repeating it answers the same."""
        app = self.get_object()
        upload = services.complete_direct_upload(app, upload_id)
        return Response(SourceUploadSerializer(upload).data)

    @extend_schema(responses=SigningKeySerializer)
    @action(detail=True, methods=["get"], url_path="code-signing")
    def code_signing(self, request, slug=None):
        """The app's code signing certificate for Expo Updates (never its private key)."""
        row = AppSigningKey.objects.filter(app=self.get_object()).first()
        if row is None:
            raise ServiceError(
                "This app has no code signing key: POST to this URL to make one.",
                code="not_found",
                status=404,
            )
        return Response(SigningKeySerializer(row).data)

    @extend_schema(request=SigningKeyRequestSerializer, responses={201: SigningKeySerializer})
    @code_signing.mapping.post
    def set_code_signing(self, request, slug=None):
        """Generate the app's key and certificate, or keep an uploaded pair (replacing any)."""
        app = self.get_object()
        body = SigningKeyRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        row = services.set_code_signing_key(
            app,
            key_id=data["key_id"],
            private_key_pem=data.get("private_key_pem"),
            certificate_pem=data.get("certificate_pem"),
        )
        return Response(SigningKeySerializer(row).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={(200, "application/x-pem-file"): OpenApiTypes.STR, 404: None})
    @action(detail=True, methods=["get"], url_path="code-signing/certificate.pem")
    def code_signing_certificate(self, request, slug=None):
        """The certificate as a PEM file: app.json's updates.codeSigningCertificate."""
        app = self.get_object()
        row = AppSigningKey.objects.filter(app=app).first()
        if row is None:
            raise ServiceError("This app has no code signing key.", code="not_found", status=404)
        response = HttpResponse(row.certificate_pem, content_type="application/x-pem-file")
        response["Content-Disposition"] = f'attachment; filename="{app.slug}-certificate.pem"'
        return response

    @extend_schema(responses=DeploymentSerializer(many=True))
    @action(detail=True, methods=["get"])
    def deployments(self, request, slug=None):
        """The app's CodePush deployment keys, one per environment and platform."""
        # DRF pages any sequence; its stubs ask for a queryset.
        rows: list | None = self.paginate_queryset(
            codepush.deployments_of(self.get_object())  # type: ignore[arg-type]
        )
        return self.get_paginated_response(DeploymentSerializer(rows, many=True).data)

    @extend_schema(request=None, responses=DeploymentSerializer)
    @action(
        detail=True,
        methods=["post"],
        url_path=r"deployments/(?P<env>[a-z]+)/(?P<platform>[a-z]+)/rotate",
    )
    def rotate_deployment(self, request, slug=None, env=None, platform=None):
        """A new deployment key; binaries with the old one get no more updates."""
        deployment = services.rotate_deployment_key(self.get_object(), env, platform)
        return Response(DeploymentSerializer(deployment).data)

    @extend_schema(request=RollbackSerializer, responses=ReleaseSerializer)
    @action(detail=True, methods=["post"], url_path=r"releases/(?P<env>[a-z]+)/rollback")
    def rollback(self, request, slug=None, env=None):
        """Back to the previous release, or (``{"to": "embedded"}``) to the bundle the app
        binaries embed."""
        body = RollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        release = services.roll_back_release(self.get_object(), env, to=body.validated_data["to"])
        return Response(ReleaseSerializer(release).data)

    @extend_schema(responses=ReleaseHealthSerializer)
    @action(detail=True, methods=["get"], url_path=r"releases/(?P<env>[a-z]+)/health")
    def release_health(self, request, slug=None, env=None):
        """Adoption and failure rate of the environment's latest releases (newest first)."""
        app = self.get_object()
        if env not in ENVIRONMENTS:
            raise ServiceError("No such environment.", code="not_found", status=404)
        return Response(ReleaseHealthSerializer(health.release_health(app, env)).data)


class BuildViewSet(
    AccountBudgetMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Build jobs (OTA bundles, Expo EAS, Flutter, FlutterFlow) of the caller's account."""

    serializer_class = BuildSerializer
    required_scopes = {"list": READ, "retrieve": READ, "create": WRITE}
    account_rates = {"create": SUBMIT_BUDGET, "list": READ_BUDGET, "retrieve": READ_BUDGET}

    def get_queryset(self):
        account = caller_account(self.request)
        jobs = (
            Job.objects.filter(kind__in=BUILD_KINDS.values())
            .select_related("account")
            .prefetch_related("artifacts")
        )
        return jobs if account is None else jobs.filter(account=account)

    @extend_schema(
        request=BuildRequestSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", str, "header", False)],
        responses={200: BuildSerializer, 201: BuildSerializer},
    )
    def create(self, request, *args, **kwargs):
        """Queue a build: 201 with the job, 200 with the first job for a repeated key."""
        body = BuildRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job, created = services.request_build(
            request_account(request),
            body.validated_data,
            idempotency_key=request.headers.get("Idempotency-Key", ""),
            by=str(request.user),
            staff=request.user.is_staff,
            request_meta={"ip": client_ip(request)},
        )
        if not created:
            refund_account_budget(request)  # a repeated Idempotency-Key queued nothing
        job = self.get_queryset().get(pk=job.pk)
        return Response(
            BuildSerializer(job, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ArtifactViewSet(AccountBudgetMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = ArtifactSerializer
    required_scope = READ
    account_rates = {"retrieve": READ_BUDGET, "download": READ_BUDGET}

    def get_queryset(self):
        account = caller_account(self.request)
        rows = Artifact.objects.all()
        return rows if account is None else rows.filter(account=account)

    @extend_schema(responses={302: None, 410: None})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        """Redirect to a link valid for an hour (sourcemaps: for their owner only)."""
        artifact = self.get_object()
        artifacts.ensure_available(artifact)
        return HttpResponseRedirect(artifacts.signed_file_url(artifact, request))


class ArtifactFileView(APIView):
    """The bytes behind a signed link (filesystem storage; S3 links go to the bucket)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(responses={(200, "*/*"): OpenApiTypes.BINARY, 403: None, 410: None})
    def get(self, request, artifact_id):
        artifact = artifacts.artifact_for_token(artifact_id, request.query_params.get("token", ""))
        return _file_response(artifact)


def _file_response(artifact: Artifact) -> FileResponse:
    response = FileResponse(
        artifacts.open_artifact(artifact),
        content_type=artifact.content_type or "application/octet-stream",
    )
    response["Content-Length"] = str(artifact.size)
    response["ETag"] = f'"{artifact.sha256}"'
    return response


def refuse_when_limited(request, app_key: str = "", *, per_address: bool = True) -> None:
    """429 with Retry-After once the app's (its key as the device names it) or the client
    address's device budget is spent (publishing.device_limits). No I/O: the first thing a
    device endpoint does."""
    wait = device_limits.wait_for(app_key, client_ip(request) if per_address else None)
    if wait is not None:
        raise device_limits.refusal(wait)


def public_bundle(artifact_id, kind=ArtifactKind.OTA_BUNDLE) -> Artifact:
    """A public bundle (or package) that is still stored (404 for any other id, 410 once
    deleted)."""
    artifact = (
        Artifact.objects.filter(pk=artifact_id, kind=kind, visibility=Visibility.PUBLIC)
        .select_related("app")
        .first()
    )
    if artifact is None:
        raise ServiceError("Not found.", code="not_found", status=404)
    artifacts.ensure_available(artifact)
    return artifact


def device_download(request, artifact_id, kind=ArtifactKind.OTA_BUNDLE) -> Artifact:
    """A bundle or package a device downloads, within the address's budget (checked before
    any work) and its app's (the id names the app only once the row is read)."""
    refuse_when_limited(request)
    artifact = public_bundle(artifact_id, kind)
    refuse_when_limited(request, artifact.app.app_key if artifact.app else "", per_address=False)
    return artifact


class BundleDownloadView(APIView):
    """A public OTA bundle, as devices download it (addressed by id, checked by sha256)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(responses={(200, "*/*"): OpenApiTypes.BINARY, 404: None, 410: None})
    def get(self, request, artifact_id):
        artifact = device_download(request, artifact_id)
        return _file_response(artifact)


def unknown_app_key() -> ServiceError:
    return ServiceError(
        "Unknown app key: send the app's X-App-Key header.", code="not_authenticated", status=401
    )


def app_for_key(request) -> App:
    key = request.headers.get("X-App-Key", "")
    app = releases.app_by_key(key) if key else None
    if app is None:
        raise unknown_app_key()
    return app


class UpdateCheckView(APIView):
    """Device update check: 200 with the bundle to install, 204 when there is none."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(
        parameters=[UpdateCheckQuerySerializer, OpenApiParameter("X-App-Key", str, "header", True)],
        responses={200: UpdateSerializer, 204: None},
    )
    def get(self, request):
        refuse_when_limited(request, request.headers.get("X-App-Key", ""))
        params = edge.plain_update_query(request.query_params)
        if params is None:  # anything unusual: the serializer decides (and words the error)
            query = UpdateCheckQuerySerializer(data=request.query_params)
            query.is_valid(raise_exception=True)
            params = query.validated_data
        app_key = request.headers.get("X-App-Key", "")
        app, release = (
            releases.update_check_state(app_key, params["env"]) if app_key else (None, None)
        )
        if app is None or app.slug != params["app"]:
            raise unknown_app_key()
        edge.remember(request, app_key, params["env"], app.slug, release, app.pk)
        update = releases.update_for_query(release, params, request.headers.get("X-Device-Id", ""))
        checkins.buildhub_check(
            app.pk,
            params["env"],
            params["platform"],
            params["device"] or request.headers.get("X-Device-Id", ""),
            params["current"],
            release["id"] if release is not None and update is not None else None,
        )
        if update is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        if update["bundle_url"].startswith("/"):
            update["bundle_url"] = request.build_absolute_uri(update["bundle_url"])
        return Response(update)


class DeviceRegisterView(APIView):
    """Register (or refresh) a device of the app named by ``X-App-Key``; idempotent."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(
        request=DeviceSerializer,
        parameters=[OpenApiParameter("X-App-Key", str, "header", True)],
        responses={200: DeviceSerializer, 201: DeviceSerializer},
    )
    def post(self, request):
        refuse_when_limited(request, request.headers.get("X-App-Key", ""))
        app = app_for_key(request)
        body = DeviceSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        with transaction.atomic():
            device, created = Device.objects.get_or_create(
                app=app,
                device_id=data["device_id"],
                defaults={
                    "platform": data["platform"],
                    "runtime_version": data.get("runtime_version", ""),
                },
            )
            if not created:
                Device.objects.filter(pk=device.pk).update(
                    platform=data["platform"],
                    runtime_version=data.get("runtime_version", ""),
                    last_seen=timezone.now(),
                )
                device.refresh_from_db()
        return Response(
            DeviceSerializer(device).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class JsonErrorsWhateverTheAccept(BaseContentNegotiation):
    """The Expo views negotiate their own answers (publishing.expo.negotiate); DRF's
    renderer is only for their JSON errors, whatever the client accepts."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ExpoManifestView(APIView):
    """Expo Updates protocol v1: the live release of the channel's environment as a manifest
    (multipart/mixed, or application/expo+json and application/json), 204 when there is none.
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []
    content_negotiation_class = JsonErrorsWhateverTheAccept
    renderer_classes = [JSONRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter("expo-platform", str, "header", True, enum=["ios", "android"]),
            OpenApiParameter("expo-runtime-version", str, "header", True),
            OpenApiParameter("expo-channel-name", str, "header", False),
            OpenApiParameter("expo-expect-signature", str, "header", False),
        ],
        responses={(200, "multipart/mixed"): OpenApiTypes.BINARY, 204: None, 400: None, 406: None},
    )
    def get(self, request, app_key):
        refuse_when_limited(request, app_key)
        expo_request = expo.parse_request(request.headers)
        env = expo_request.env
        app, release = releases.update_check_state(app_key, env if env in ENVIRONMENTS else "")
        if app is None:
            raise ServiceError("No app has this key.", code="not_found", status=404)
        if env in ENVIRONMENTS:
            edge.remember(request, app_key, env, app.slug, release, app_id=app.pk)
        key = None
        if expo_request.expects_signature:
            key = signing.key_for(app)
            if key is None:
                raise ServiceError(
                    "The app asks for signed manifests but has no code signing key: make one "
                    f"(POST /api/v1/apps/{app.slug}/code-signing/) and embed its certificate.",
                    code="code_signing_not_configured",
                    fields={"expo-expect-signature": "no key for this app"},
                )

        def asset_url(artifact_id):
            path = reverse("expo-asset", kwargs={"artifact_id": artifact_id})
            return request.build_absolute_uri(path)

        directive = expo.directive_for(release, expo_request)
        if directive is not None:
            checkins.expo_check(app.pk, env, expo_request.platform, request.headers, None)
            return _expo_response(_expo_directive(directive, expo_request, key))
        manifest = expo.manifest_for(release, expo_request, asset_url)
        if env in ENVIRONMENTS:
            offered = release["id"] if release is not None and manifest is not None else None
            checkins.expo_check(app.pk, env, expo_request.platform, request.headers, offered)
        if manifest is None:
            return _expo_response(HttpResponse(status=status.HTTP_204_NO_CONTENT))
        body = expo.encode(manifest)
        signature = {"expo-signature": signing.signature_header(key, body)} if key else {}
        if expo_request.accepts == expo.MULTIPART:
            extensions = expo.encode({"assetRequestHeaders": {}})
            content_type, payload = expo.multipart(
                [("manifest", body, signature), ("extensions", extensions, {})]
            )
            response = HttpResponse(payload, content_type=content_type)
        else:
            response = HttpResponse(body, content_type=f"{expo_request.accepts}; charset=utf-8")
            for header, value in signature.items():
                response[header] = value
        return _expo_response(response)


ENVIRONMENTS = frozenset(Environment.values)


def _expo_directive(directive: dict, expo_request, key) -> HttpResponse:
    """A directive travels only as a multipart part (the JSON answers carry manifests)."""
    if expo_request.accepts != expo.MULTIPART:
        raise ServiceError(
            "The answer here is a directive (rollBackToEmbedded), which only a "
            "multipart/mixed response carries; accept multipart/mixed.",
            code="not_acceptable",
            status=406,
        )
    body = expo.encode(directive)
    signature = {"expo-signature": signing.signature_header(key, body)} if key else {}
    content_type, payload = expo.multipart([("directive", body, signature)])
    return HttpResponse(payload, content_type=content_type)


def _expo_response(response: HttpResponse) -> HttpResponse:
    for header, value in expo.COMMON_HEADERS.items():
        response[header] = value
    return response


class ExpoAssetView(APIView):
    """An Expo update's asset (a release's bundle): the same bytes at the same URL forever,
    compressed as the client accepts."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []
    content_negotiation_class = JsonErrorsWhateverTheAccept
    renderer_classes = [JSONRenderer]

    @extend_schema(responses={(200, "*/*"): OpenApiTypes.BINARY, 404: None, 410: None})
    def get(self, request, artifact_id):
        artifact = device_download(request, artifact_id)
        encoding = expo.best_encoding(request.headers.get("accept-encoding", ""))

        def read() -> bytes:
            with artifacts.open_artifact(artifact) as handle:
                return handle.read()

        body = expo.asset_body(artifact.sha256, encoding, read)
        response = HttpResponse(body, content_type=expo.LAUNCH_ASSET_TYPE)
        if encoding:
            response["Content-Encoding"] = encoding
        response["Vary"] = "Accept-Encoding"
        response["Cache-Control"] = expo.ASSET_CACHE_CONTROL
        response["ETag"] = f'"{artifact.sha256}"'
        return response


class CodePushUpdateCheckView(APIView):
    """CodePush update check (``react-native-code-push``): 200 with ``update_info``, or 429
    (with "no update" too) when the device limits refuse it."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []
    legacy = False

    @extend_schema(
        parameters=[
            OpenApiParameter(name, str, "query", name in ("deployment_key", "app_version"))
            for name in (
                "deployment_key",
                "app_version",
                "package_hash",
                "label",
                "client_unique_id",
                "is_companion",
            )
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        refuse_when_limited(request)
        query = request.query_params.dict()
        if self.legacy:
            query = codepush.from_legacy(query)

        def package_url(artifact_id):
            path = reverse("codepush-package", kwargs={"artifact_id": artifact_id})
            return request.build_absolute_uri(path)

        deployment, app, release = codepush.check_state(query)
        refuse_when_limited(request, app.app_key if app else "", per_address=False)
        if deployment is not None and app is not None:
            edge.remember(request, app.app_key, deployment["env"], app.slug, release, app.pk)
            edge.remember_deployment(request, str(query["deployment_key"]), deployment)
        info = codepush.update_info(deployment, release, query, package_url)
        if deployment is not None and app is not None:
            offered = release["id"] if release is not None and info["is_available"] else None
            checkins.codepush_check(
                app.pk, deployment["env"], deployment["platform"], query, offered
            )
        if self.legacy:
            return Response({"updateInfo": codepush.to_legacy(info)})
        return Response({"update_info": info})

    def handle_exception(self, exc):
        """A refusal (429) also says "no update" in the check's own shape. The code-push SDK
        reads no body of an error: it fails that check with "429: ..." and, 429 being a
        recoverable status to it, checks again at the next launch or resume."""
        response = super().handle_exception(exc)
        if response.status_code == status.HTTP_429_TOO_MANY_REQUESTS:
            info = codepush.no_update()
            if self.legacy:
                response.data["updateInfo"] = codepush.to_legacy(info)
            else:
                response.data["update_info"] = info
        return response


class CodePushReportView(APIView):
    """A CodePush client's download or deploy report; recorded, and 200 whatever the body
    (429 only when the device limits refuse it)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []
    kind = "deploy"
    legacy = False

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def post(self, request):
        refuse_when_limited(request)
        try:
            body = request.data if isinstance(request.data, dict) else {}
        except (ParseError, UnsupportedMediaType):  # a bad body is not refused
            body = {}
        if self.legacy:
            body = codepush.from_legacy(body)
        deployment = codepush.deployment_by_key(str(body.get("deployment_key", "")))
        refuse_when_limited(request, deployment["app_key"] if deployment else "", per_address=False)
        codepush.record_report(self.kind, body)
        return Response({"status": "ok"})


class CodePushPackageView(APIView):
    """A release's CodePush package (a zip), the same bytes at the same URL for good."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY, 404: None})
    def get(self, request, artifact_id):
        artifact = device_download(request, artifact_id, ArtifactKind.CODEPUSH_PACKAGE)
        response = _file_response(artifact)
        response["Cache-Control"] = expo.ASSET_CACHE_CONTROL
        return response
