"""The series BuildHub exports, named as Prometheus stores them, for checking what the
repository's rules and dashboard refer to."""

import re
import shutil

from prometheus_client import REGISTRY

from buildhub import metrics

SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}
SERIES_NAME = re.compile(r"\bbuildhub_[a-z0-9_]+")


def exported_series() -> set[str]:
    """Every series name of the metrics this process defines (read from the registry, with
    the suffixes of their types) and of the scrape-time collectors (reads the database)."""
    families = [*REGISTRY.collect()]
    for collector in metrics._collectors:
        families.extend(collector.collect())
    return {
        family.name + suffix
        for family in families
        if family.name.startswith("buildhub_")
        for suffix in SUFFIXES[family.type]
    }


def series_named_in(expression: str) -> set[str]:
    return set(SERIES_NAME.findall(expression))


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make observability` installs it (Debian: prometheus)"
    return path
