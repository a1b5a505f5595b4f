"""The Grafana dashboard and the Prometheus alert rules in docs/operations/ name only
metrics the collector really exports: each name they use is looked up in the metrics of
a configured Resilience (near tier on, so its families are there too), rendered as
Prometheus scrapes them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from tasker_resilience._operations.metrics import private_registry
from tasker_resilience.testing import configure_for_tests

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations"
DASHBOARD = OPERATIONS / "grafana-dashboard.json"
ALERTS = OPERATIONS / "prometheus-alerts.yml"
METRIC = re.compile(r"\btasker_resilience_[a-z_]+\b")


def _exported() -> set[str]:
    """Every metric name in one scrape: ``# TYPE`` lines (families with no sample yet,
    such as cluster nodes) and the sample lines (``_total`` and ``_created`` included)."""
    res = configure_for_tests(
        {"common": {"cache": {"near": {"enabled": True, "tracking": "off"}}}}, backend="redis"
    )
    res.cache.set("k", 1)
    res.cache.get("k")
    text = generate_latest(private_registry(res)).decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _exprs(node: Any) -> Iterator[str]:
    """Every query of the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return _exported()


def test_the_scrape_holds_the_families_the_docs_rely_on(exported: set[str]) -> None:
    # The check below must be able to fail: a made-up name is not in the scrape.
    assert "tasker_resilience_breaker_state" in exported
    assert "tasker_resilience_cache_near_total" in exported
    assert "tasker_resilience_cache_pending_invalidations" in exported
    assert "tasker_resilience_breaker_opened_forever" not in exported


def test_every_metric_the_dashboard_names_exists(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = list(_exprs(dashboard))
    named = {name for expr in exprs for name in METRIC.findall(expr)}
    assert len(exprs) >= 10
    assert named, "the dashboard names no metric"
    assert named <= exported, sorted(named - exported)


def test_every_metric_the_alert_rules_name_exists(exported: set[str]) -> None:
    text = ALERTS.read_text(encoding="utf-8")
    exprs = [line.split("expr:", 1)[1] for line in text.splitlines() if "expr:" in line]
    named = {name for expr in exprs for name in METRIC.findall(expr)}
    assert len(exprs) >= 4
    assert {
        "tasker_resilience_breaker_state",
        "tasker_resilience_cache_near_total",
        "tasker_resilience_cache_pending_invalidations",
    } <= named, "open breaker, stale_served rising and a growing replay backlog"
    assert named <= exported, sorted(named - exported)


def test_the_alert_rules_are_well_formed() -> None:
    # No YAML parser in the test dependencies: the shape promtool needs, checked by
    # hand (one group, each rule an alert with an expr; no tabs).
    text = ALERTS.read_text(encoding="utf-8")
    assert "\t" not in text
    assert text.count("- alert: ") == text.count("expr: ") >= 4
    assert re.search(r"^groups:\n  - name: tasker-resilience\n    rules:\n", text, re.M)
