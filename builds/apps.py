from django.apps import AppConfig


class BuildsConfig(AppConfig):
    name = "builds"
    verbose_name = "Accounts and builds"

    def ready(self):
        # Imported once the app registry is ready: these modules import models.
        from buildhub.metrics import register_collector
        from builds import registry
        from builds.api import schema  # noqa: F401 - registers the token auth in OpenAPI
        from builds.engine.diagnostic import noop_executor, sleep_executor

        registry.register_kind(
            "diagnostic.sleep",
            sleep_executor,
            staff_only=True,
            counts_as_build=False,
            description="Sleeps in a child process; for tests, benchmarks and fault drills.",
        )
        registry.register_kind(
            "diagnostic.noop",
            noop_executor,
            staff_only=True,
            counts_as_build=False,
            description="Does nothing: measures the engine's own overhead (benchmarks).",
        )
        from builds.metrics import QueueCollector

        register_collector(QueueCollector())
        from django.conf import settings

        from builds import retention

        # manage.py sweep_history runs it with its own options, not as a retention task.
        registry.register_periodic(
            "sweep finished jobs",
            retention.periodic_sweep,
            interval_seconds=settings.JOB_RETENTION_INTERVAL_SECONDS,
        )
