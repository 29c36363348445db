from django.apps import AppConfig
from django.conf import settings


class BuildEventsConfig(AppConfig):
    name = "buildevents"
    verbose_name = "Build events"

    def ready(self):
        from buildevents.api import auth  # noqa: F401 - registers X-Build-Token in OpenAPI
        from buildevents.sweeps import periodic_sweep
        from builds import registry

        registry.register_periodic(
            "buildevents.stale-runs",
            periodic_sweep,
            interval_seconds=settings.BUILD_EVENTS_SWEEP_INTERVAL_SECONDS,
        )
