"""benchmarks/report.py: a benchmark script run writes its dated report; a failed run none."""

import datetime as dt
import sys
import types

import pytest

from tests.crd_schema import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import report  # noqa: E402


def _benchmark(rc: int):
    module = types.ModuleType("fake_benchmark")
    module.__doc__ = "Fake benchmark: prints a table.\n\nMore words."

    def main(n: int) -> int:
        print(f"| streams | p99 |\n| {n} | 12 ms |")
        return rc

    main.__module__ = module.__name__
    sys.modules[module.__name__] = module
    return main


def test_a_script_run_writes_its_dated_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPEECHOPS_REPORT_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["/x/benchmarks/fake.py", "--quick", "--traces=/data/traces",
                                      str(REPO / "docs" / "x.csv")])
    assert report.run_and_report("fake", _benchmark(0), 32) == 0
    assert "| 32 | 12 ms |" in capsys.readouterr().out  # still printed as before
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    [path] = tmp_path.iterdir()
    assert path.name == f"fake-{today}.md"
    text = path.read_text()
    assert text.startswith("# fake: Fake benchmark: prints a table\n\nMeasured ")
    # Paths outside the repository keep only their name; inside it, relative.
    assert "python3 benchmarks/fake.py --quick --traces=.../traces docs/x.csv" in text
    assert "| cores |" in text and "| python |" in text
    assert "| streams | p99 |\n| 32 | 12 ms |\n```" in text


@pytest.mark.parametrize("rc,env", [(1, "1"), (0, "0")])
def test_a_failed_or_unrecorded_run_writes_nothing(tmp_path, monkeypatch, rc, env):
    monkeypatch.setenv("SPEECHOPS_REPORT_DIR", str(tmp_path))
    monkeypatch.setenv("SPEECHOPS_REPORT", env)
    assert report.run_and_report("fake", _benchmark(rc), 1) == rc
    assert list(tmp_path.iterdir()) == []
    assert sys.stdout is not None and not isinstance(sys.stdout, report._Tee)


def test_render_names_the_machine_and_the_date():
    when = dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.timezone.utc)
    text = report.render("backtest", "table", argv=["benchmarks/backtest.py"], facts={"cores": "2"}, when=when)
    assert "Measured 2026-12-03 09:30 UTC" in text and "| cores | 2 |" in text


def test_the_title_is_the_docstrings_first_sentence():
    doc = "Backtest every trace and print the table\nagainst the targets. More.\n\nDetails."
    assert report.describe(doc) == ("Backtest every trace and print the table against the targets",
                                    "Backtest every trace and print the table against the targets. More.")
