"""Evaluation: run a JSONL question set through a gateway (or in process, for a rollout's gate),
score retrieval and answers, report (JSON, Rich table, PNG) and track runs in MLflow.

Rooms: :mod:`.dataset` (loading and checking a dataset, content hash), :mod:`.scoring` (the metric
formulas), :mod:`.targets` (what is evaluated: a gateway over HTTP or the app in process),
:mod:`.runner` (one run), :mod:`.report` (table, JSON, chart), :mod:`.tracking` (MLflow) and
:mod:`.gate` (thresholds a rollout requires).
"""
