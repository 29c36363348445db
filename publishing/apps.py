from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_delete, post_save


class PublishingConfig(AppConfig):
    name = "publishing"
    verbose_name = "Publishing"

    def ready(self):
        # Imported once the app registry is ready: these modules import models.
        from builds import registry
        from builds.engine import events
        from publishing import artifacts, caches, ota, releases, retention, sources, store

        registry.register_kind(
            releases.PUBLISH_KIND,
            releases.publish_executor,
            counts_as_build=False,
            description="Publish a version: release.json, then switch devices to it.",
        )
        for kind, executor, description in (
            (store.EXPO_KIND, store.expo_executor, "Expo EAS build or submit with the eas CLI."),
            (store.FLUTTER_KIND, store.flutter_executor, "Flutter build, or a CI workflow."),
            (
                store.FLUTTERFLOW_KIND,
                store.flutterflow_executor,
                "FlutterFlow export and publish instructions.",
            ),
        ):
            registry.register_kind(kind, executor, description=description)
        registry.register_kind(
            ota.OTA_KIND,
            ota.ota_executor,
            description="OTA bundle: Metro, then Hermes bytecode, with a private sourcemap.",
        )
        events.job_failed.connect(releases.on_publish_job_ended, dispatch_uid="publish-ended")
        # The worker supervisor runs these even while the workers are scaled to zero.
        registry.register_periodic(
            "sweep expired artifacts",
            artifacts.sweep_expired_artifacts,
            interval_seconds=settings.STORAGE_SWEEP_INTERVAL_SECONDS,
        )
        registry.register_periodic(
            "sweep build caches",
            caches.sweep_build_caches,
            interval_seconds=settings.BUILD_CACHE_SWEEP_INTERVAL_SECONDS,
        )
        registry.register_periodic(
            "sweep expired sources",
            sources.sweep_expired_sources,
            interval_seconds=settings.STORAGE_SWEEP_INTERVAL_SECONDS,
        )
        registry.register_periodic(
            "prune device check-ins",
            retention.periodic_prune,
            interval_seconds=settings.STORAGE_SWEEP_INTERVAL_SECONDS,
            retention=True,
        )
        registry.register_job_keeper(retention.jobs_still_needed)
        registry.register_job_outputs(artifacts.job_outputs)
        for signal in (post_save, post_delete):
            signal.connect(
                releases.forget_app_key, sender="publishing.App", dispatch_uid="forget-app-key"
            )
