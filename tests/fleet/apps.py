from django.apps import AppConfig


class FleetConfig(AppConfig):
    """The drill's own job kind: ``diagnostic.sleep`` that an account token may submit.

    ``diagnostic.sleep`` is for staff, and the drill submits as customers do, with account
    tokens, so that the account's submit budget, concurrency cap and priority class apply.
    """

    name = "tests.fleet"
    label = "fleet_drill"

    def ready(self):
        from builds import registry
        from builds.engine.diagnostic import sleep_executor

        registry.register_kind(
            "fleet.sleep",
            sleep_executor,
            counts_as_build=False,
            description="diagnostic.sleep for account tokens (the multi-node drill only).",
        )
