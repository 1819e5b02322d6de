"""The operations kit: promtool checks and tests the rules; every series they and the dashboard use exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sessionhive import Hive, ScriptedLlm
from sessionhive.ops import FILES, path
from sessionhive.serve import ServerThread, serve_app
from tests.conftest import tool_loop_script

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


ALERTS = (
    "SessionhiveStoreFailing",
    "SessionhivePersistenceBacklog",
    "SessionhiveTurnErrorRate",
    "SessionhiveConfirmationsWaitingTooLong",
    "SessionhiveConfirmationsTimingOut",
)
TOKEN = "ops-test-token-0123456789"


def healthy_scrape(tmp_path: Path) -> str:
    """What a real service exposes after a few turns that all succeeded (SQLite store, HTTP calls)."""
    with (
        Hive.start(
            store=f"sqlite:///{tmp_path / 'ops.db'}", llm=ScriptedLlm(tool_loop_script), workspace=tmp_path
        ) as hive,
        ServerThread(serve_app(hive, token=TOKEN)) as server,
    ):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for n in range(3):
            hive.create_session(f"s{n}")
            hive.generate(f"s{n}", "look around")
        assert httpx.get(server.url + "/v1/sessions", headers=headers).status_code == 200
        hive.flush()
        return httpx.get(server.url + "/metrics").text


def _series_name(name: str, labels: dict[str, str]) -> str:
    escaped = {k: v.replace("\\", "\\\\").replace('"', '\\"') for k, v in labels.items()}
    inner = ",".join(f'{k}="{v}"' for k, v in sorted({**escaped, "instance": "a"}.items()))
    return f"{name}{{{inner}}}"


def input_series_from(exposition: str, steps: int = 40) -> list[dict[str, str]]:
    """Replay a scrape as promtool input: counters keep growing at the rate they reached, gauges stay."""
    series = []
    for family in text_string_to_metric_families(exposition):
        grows = family.type in ("counter", "histogram", "summary")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            value = repr(float(sample.value))
            values = f"{value}+{value}x{steps}" if grows else f"{value}x{steps}"
            series.append({"series": _series_name(sample.name, sample.labels), "values": values})
    return series


@needs_promtool
def test_on_a_healthy_service_the_rules_read_zero_and_no_alert_fires(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    exposition = healthy_scrape(tmp_path)
    # The error series exists before the first error: the ratio has something to divide.
    assert 'sessionhive_turns_total{outcome="error"} 0.0' in exposition
    zero = [
        ("sessionhive:turn_error_ratio:rate5m", "sessionhive:turn_error_ratio:rate5m"),
        ('sessionhive:turns:rate5m{outcome="error"}', 'sessionhive:turns:rate5m{outcome="error"}'),
        ("sessionhive:persistence_failures:rate5m", "sessionhive:persistence_failures:rate5m"),
        ("sessionhive:http_errors:rate5m", "sessionhive:http_errors:rate5m"),
    ]
    test_file = {
        "rule_files": ["prometheus-rules.yml"],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "30s",
                "input_series": input_series_from(exposition),
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "15m", "exp_samples": [{"labels": labels, "value": 0}]}
                    for expr, labels in zero
                ],
                "alert_rule_test": [
                    {"eval_time": "19m", "alertname": alert, "exp_alerts": []} for alert in ALERTS
                ],
            }
        ],
    }
    shutil.copy(path("prometheus-rules.yml"), tmp_path / "prometheus-rules.yml")
    # JSON is YAML: promtool reads it as its test file.
    (tmp_path / "healthy.test.yml").write_text(json.dumps(test_file, indent=1))
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", "healthy.test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


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
    for expression in expressions:
        # An aggregation over series a healthy service may not have yet (no 5xx, no tool used)
        # would draw nothing; the panels draw 0 instead. Quantiles of nothing stay empty.
        if expression.startswith(("sum", "max")):
            assert expression.endswith(" or on() vector(0)"), expression
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert "Confirmations waiting for a human" in titles and "Persistence: pending snapshots" in titles
