"""The operations kit: promtool checks and tests the rules; every series they and the dashboard use exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from sessionhive import Hive
from sessionhive.ops import FILES, path
from sessionhive.serve import ServerThread, serve_app

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="LOUD SKIP: promtool is missing (Debian package 'prometheus'; .ci/run installs it)",
)


def test_the_kit_is_installed_with_the_package() -> None:
    for name in FILES:
        assert path(name).is_file(), name
    with pytest.raises(ValueError, match="no file"):
        path("nothing.yml")


@needs_promtool
def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    for name in ("prometheus-rules.yml", "prometheus-rules.test.yml"):
        shutil.copy(path(name), tmp_path / name)
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", "prometheus-rules.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", "prometheus-rules.test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def exposed_metric_names(tmp_path: Path) -> set[str]:
    with (
        Hive.start(store="memory", workspace=tmp_path) as hive,
        ServerThread(serve_app(hive, token="ops-test-token-0123456789")) as server,
    ):
        text = httpx.get(server.url + "/metrics").text
    return {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}


def test_every_series_in_the_rules_and_the_dashboard_exists(tmp_path: Path) -> None:
    exposed = exposed_metric_names(tmp_path)
    rules = path("prometheus-rules.yml").read_text()
    recorded = set(re.findall(r"record: (sessionhive:[a-z0-9_:]+)", rules))
    dashboard = json.loads(path("grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(dashboard["panels"]) >= 12
    used = set(re.findall(r"\b(sessionhive_[a-z_]+)", rules + "\n".join(expressions)))
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in exposed or base in exposed, f"{name} is not a metric sessionhive serve exposes"
    for name in set(re.findall(r"\b(sessionhive:[a-z0-9_:]+)", "\n".join(expressions))):
        assert name in recorded, f"the dashboard uses {name}, which no recording rule defines"
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert "Confirmations waiting for a human" in titles and "Persistence: pending snapshots" in titles
