from django.apps import AppConfig


class AbuseConfig(AppConfig):
    name = "abuse"
    verbose_name = "Abuse review"

    def ready(self):
        from django.conf import settings

        from abuse import services
        from builds import registry
        from builds.engine import events
        from builds.models import Job

        registry.register_submission_check(services.check_submission)
        events.job_completed.connect(
            services.on_job_completed, sender=Job, dispatch_uid="abuse-bundle-built"
        )
        registry.register_periodic(
            "purge abuse IPs",
            services.purge_expired_ips,
            interval_seconds=settings.ABUSE_PURGE_INTERVAL_SECONDS,
        )
