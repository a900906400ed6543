"""The predictive scaler: signals (Prometheus, pods) -> forecast -> policy -> decision.

`controller.tick` is one tick, `handlers` its kopf timer, `simulate` the backtest that
replays traces through the same `Policy` and forecaster (`speechops backtest`).
"""
