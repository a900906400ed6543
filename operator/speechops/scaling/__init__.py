"""The predictive scaler: signals (Prometheus, pods) -> forecast -> policy -> decision -> actions.

`controller.tick` is one tick (its decision, `controller.decide`, is the backtest's too),
`handlers` its kopf timer, `actions` what it writes, and `backtest` the package that
replays traces through the same tick (`speechops backtest`).
"""
