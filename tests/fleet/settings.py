"""BuildHub's settings plus the drill's job kind (every process of the drill uses these)."""

from buildhub.settings import *  # noqa: F403
from buildhub.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.fleet.apps.FleetConfig"]
