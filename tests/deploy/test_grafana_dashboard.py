"""The Grafana dashboard in deploy/grafana/: every query is valid PromQL (promtool reads
them as recording rules) and names only series BuildHub exports."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from tests.deploy.catalogue import exported_series, promtool, series_named_in

pytestmark = pytest.mark.integration  # promtool (make observability)

DASHBOARD = Path(settings.BASE_DIR) / "deploy" / "grafana" / "buildhub.json"


def queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


@pytest.mark.django_db
def test_every_query_names_series_that_exist():
    exported = exported_series()
    found = queries()
    assert len(found) >= 20
    for title, expression in found:
        named = series_named_in(expression)
        assert named, f"{title!r} names no BuildHub series: {expression}"
        assert named <= exported, f"{title!r} names unknown series {named - exported}"
    every_named = set().union(*(series_named_in(expression) for _, expression in found))
    shown = {name.removesuffix("_bucket") for name in every_named}
    assert {"buildhub_queue_jobs", "buildhub_workers", "buildhub_update_checks_total"} <= shown


def test_every_query_is_valid_promql(tmp_path):
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{number}", "expr": expression}
                    for number, (_, expression) in enumerate(queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
