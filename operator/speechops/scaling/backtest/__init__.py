"""Backtest: replay an arrivals trace through the scaling policies on the operator's tick.

`speechops backtest TRACE.csv` turns arrivals into concurrent streams (each lasts
`--duration`, or that on average with `--durations exponential`, so concurrency = arrival
rate x duration, Little's law), runs the tick the operator runs live (`controller.decide`:
the same `Policy` and `SeasonalForecaster`) against a fleet model where a pod takes
`--start-delay` to become ready and serves `--capacity` streams, and scores past a warm-up:
unserved stream-minutes (demand beyond what ready pods can hold), pod-hours (starting,
ready and draining pods all cost), streams cut (on a pod removed while it served them) and
scale events.

Modules: `trace` (input: CSV or a pipeline's own arrivals from Prometheus), `fleet` (pods
in aggregate), `baselines` (HPA, Holt-Winters, oracle, perfect forecast), `run` (one
backtest), `report` (scores and the table), `plot` (the PNG), `cli` (the command line).
"""
