"""`helm lint --strict` through Helm's own engine, with the value sets users run."""

from __future__ import annotations

import pytest

from chartkit import CHART, VALUE_SETS, helm

WARNING = 2  # Helm's severities: 1 info, 2 warning, 3 error


@pytest.mark.parametrize("values_id", VALUE_SETS)
def test_chart_lints_clean_in_strict_mode(values_id):
    report = helm.lint(str(CHART), VALUE_SETS[values_id], strict=True, kube_version="v1.30.0")
    problems = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= WARNING]
    assert report["total_charts_linted"] == 1
    assert not report["errors"] and not problems, "\n".join(problems + report["errors"])


def test_lint_reports_a_template_error_with_its_location(tmp_path):
    # The lint must be able to fail: break one template in a copy of the chart.
    broken = tmp_path / "speechops"
    with helm.Chart.load(str(CHART)) as chart:
        chart.save_dir(str(tmp_path))
    (broken / "templates" / "service.yaml").write_text("{{ .Values.operator.nope.missing }}\n")
    report = helm.lint(str(broken), strict=True)
    assert any("service.yaml" in e and "nil pointer" in e for e in report["errors"]), report
