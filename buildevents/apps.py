from django.apps import AppConfig


class BuildEventsConfig(AppConfig):
    name = "buildevents"
    verbose_name = "Build events"
