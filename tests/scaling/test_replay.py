"""`speechops backtest --prometheus`: a pipeline's own arrivals, read back from a real
Prometheus (the session fixture backfills 15 days of them), replayed through the policies."""

import json
from pathlib import Path

import numpy as np
import pytest

from speechops.scaling.backtest import cli as backtest_cli
from speechops.scaling.backtest.trace import PipelineHistory, ReplayError, arrivals_from_counters


def test_counters_are_differenced_per_series_through_resets_and_new_pods():
    start = 0.0
    steady = (np.array([0.0, 60, 120, 180]), np.array([10.0, 15, 20, 26]))    # running before the range
    restarted = (np.array([0.0, 60, 120, 180]), np.array([100.0, 110, 3, 5]))  # back to 0 after t=60
    new_pod = (np.array([120.0, 180]), np.array([4.0, 6]))                     # started mid-range
    minutes, arrivals = arrivals_from_counters([steady, restarted, new_pod], start)
    assert minutes.tolist() == [0.0, 60.0, 120.0]          # each minute's arrivals, stamped at its start
    assert arrivals.tolist() == [5 + 10, 5 + 3 + 4, 6 + 2 + 2]


def test_littles_law_gives_the_duration_and_says_when_nothing_arrived():
    minutes = np.arange(0.0, 3600, 60)
    history = PipelineHistory(name="ns/p", times=minutes, arrivals=np.full(len(minutes), 30.0),
                              streams_times=minutes + 60, streams=np.full(len(minutes), 120.0))
    assert history.arrival_rate == pytest.approx(0.5)
    assert history.littles_law_duration() == pytest.approx(240.0)
    idle = PipelineHistory(name="ns/p", times=minutes, arrivals=np.zeros(len(minutes)),
                           streams_times=minutes + 60, streams=np.zeros(len(minutes)))
    with pytest.raises(ReplayError, match="no streams were admitted.*--duration"):
        idle.littles_law_duration()


def run_json(capsys, *argv) -> dict:
    assert backtest_cli.main([*argv, "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def test_backtest_replays_a_pipeline_from_prometheus(prometheus, tmp_path, capsys):
    saved = tmp_path / "arrivals.csv"
    report = run_json(capsys, "--prometheus", prometheus.url, "--pipeline", f"{prometheus.namespace}/{prometheus.pipeline}",
                      "--history", "3d", "--capacity", "64", "--save-trace", str(saved))
    source = report["source"]
    assert report["trace"] == f"{prometheus.namespace}/{prometheus.pipeline}" and source["duration_from"] == "littles_law"
    # The backfilled arrivals imply 240 s streams, through one pod's restart and another's start.
    assert source["littles_law_duration_seconds"] == pytest.approx(prometheus.stream_seconds, rel=0.05)
    assert report["options"]["duration"] == pytest.approx(source["littles_law_duration_seconds"], abs=0.1)
    assert source["replay_gap"] < 0.1            # replayed concurrency follows the gauge the gateways kept
    assert 2.9 * 86400 / 15 < report["ticks"] < 3.1 * 86400 / 15
    assert report["results"]["speechops"]["streams_cut"] == 0
    assert report["results"]["speechops"]["pod_hours"] > 0

    # The saved arrivals replay offline to the same figures.
    offline = run_json(capsys, str(saved), "--duration", f"{report['options']['duration']}s", "--capacity", "64")
    assert offline["results"] == report["results"]


def test_table_says_where_the_arrivals_came_from(prometheus, capsys):
    assert backtest_cli.main(["--prometheus", prometheus.url, "--pipeline", f"{prometheus.namespace}/{prometheus.pipeline}",
                          "--history", "1d", "--duration", "300s", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"1 day of arrivals from {prometheus.url}" in out
    assert "streams last 300 s (--duration)" in out
    assert "of the streams the gateways counted" in out


@pytest.mark.parametrize("argv, message", [
    (["--pipeline", "speech/nobody"], "no arrivals for `speechops_streams_started_total{namespace=\"speech\","
                                      "pipeline=\"nobody\"}`"),
    (["--pipeline", "callcenter"], "--pipeline must be NAMESPACE/NAME"),
    ([], "--prometheus needs --pipeline"),
], ids=["unknown-pipeline", "no-namespace", "no-pipeline"])
def test_prometheus_input_errors_name_the_problem(prometheus, capsys, argv, message):
    assert backtest_cli.main(["--prometheus", prometheus.url, "--history", "1d", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_trace_and_prometheus_together_are_refused(tmp_path, capsys):
    assert backtest_cli.main([str(tmp_path / "t.csv"), "--prometheus", "http://127.0.0.1:9"]) == 2
    assert "either a trace CSV or --prometheus" in capsys.readouterr().err


def test_unreachable_prometheus_is_reported(capsys):
    assert backtest_cli.main(["--prometheus", "http://127.0.0.1:9", "--pipeline", "a/b"]) == 2
    assert "http://127.0.0.1:9 unreachable" in capsys.readouterr().err


def test_a_pipeline_manifest_sets_the_policy_and_names_the_pipeline(prometheus, tmp_path, capsys):
    """--spec: the manifest's tier, capacity, utilisation and scaling settings, and its
    namespace/name as the pipeline to read; a flag still wins over the manifest."""
    example = Path(__file__).resolve().parents[2] / "examples" / "callcenter-realtime-asr.yaml"
    report = run_json(capsys, "--prometheus", prometheus.url, "--spec", str(example), "--history", "1d",
                      "--scale-down-delay", "2m")
    assert report["trace"] == "speech/callcenter"
    options = report["options"]
    assert (options["capacity"], options["util"], options["headroom_sigmas"]) == (200, 0.7, 2.5)   # realtime
    assert (options["lead"], options["scale_down_delay"]) == (240.0, 120.0)
    assert report["source"]["history_seconds"] == 86400

    broken = tmp_path / "broken.yaml"
    broken.write_text(example.read_text().replace("streamsPerReplica: 200", "streamsPerReplica: lots"))
    assert backtest_cli.main(["--prometheus", prometheus.url, "--spec", str(broken)]) == 2
    assert "spec.capacity.streamsPerReplica" in capsys.readouterr().err
