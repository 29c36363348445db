"""The alert rules in deploy/prometheus/: valid, firing on what they are about (promtool's
unit tests), and naming only series BuildHub exports."""

import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from tests.deploy.catalogue import exported_series, promtool, series_named_in

pytestmark = pytest.mark.integration  # promtool (make observability)

RULES = Path(settings.BASE_DIR) / "deploy" / "prometheus"


def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    checked = subprocess.run(
        [promtool(), "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.mark.django_db
def test_every_rule_names_series_that_exist():
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    exported = exported_series()
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    named = set().union(*(series_named_in(expression) for expression in expressions))
    assert named, "the rules name no BuildHub series"
    assert named - exported == set()
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "BuildHubQueueWaitAboveTierExpectation",
        "BuildHubNoLiveWorker",
        "BuildHubLeaseReaps",
        "BuildHubHighErrorRate",
        "BuildHubUpdateCheckSlow",
        "BuildHubStaleBuildRuns",
    } <= alerts
