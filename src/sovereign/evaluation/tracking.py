"""MLflow tracking of evaluation runs and explicit, logged promotion between aliases (the ``mlops`` extra).

Each ``sovereign eval run --mlflow`` becomes one MLflow run in ``eval.mlflow_experiment``: params
(model, deployment, engine, collection, answer budget, validator threshold, dataset path and SHA-256,
corpus SHA-256 and size), every metric that has a value, and the artefacts (``eval.json``, the chart,
the dataset file). ``--register`` adds the run as a new version of the registered model
``sovereign.<model>`` (tags: deployment, dataset version) and points its ``candidate`` alias at it.
Promotion (:meth:`Tracker.promote`) moves another alias (``champion`` by default) to a version and
records that move as its own run in ``<experiment>-promotions``, so who promoted what, from which
version, and why is in the tracking store. MLflow's aliases replace its deprecated stages
(MLflow 2.9+ docs, "Deprecated: Using Model Registry Stages").

Default store: ``sqlite:///<data_dir>/mlflow/mlflow.db`` with artefacts in ``<data_dir>/mlflow/artifacts``
(``mlflow ui --backend-store-uri`` that URI shows them); ``eval.mlflow_tracking_uri_env`` names an
env var with a server URL instead.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sovereign.config import Settings
from sovereign.errors import NotFoundError
from sovereign.extras import require

if TYPE_CHECKING:
    from mlflow import MlflowClient

CANDIDATE = "candidate"
CHAMPION = "champion"


def registered_name(model: str) -> str:
    """The MLflow registered-model name of a gateway model."""
    return f"sovereign.{model}"


def tracking_uri(settings: Settings) -> tuple[str, Path | None]:
    """``(tracking URI, artefact root or None)`` from ``[eval]``: the env var's URI, else SQLite in data_dir."""
    env = settings.eval.mlflow_tracking_uri_env
    if env and os.environ.get(env):
        return os.environ[env], None
    root = settings.data_dir / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"


class Tracker:
    """An MLflow client bound to one tracking URI and experiment.

    Raises:
        MissingExtraError: mlflow is not installed (``pip install 'sovereign[mlops]'``).
    """

    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        require("mlflow", extra="mlops", feature="MLflow tracking")
        from mlflow import MlflowClient

        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri = uri
        self.client: MlflowClient = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.experiment = experiment
        self.artifact_root = artifact_root

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracker:
        uri, root = tracking_uri(settings)
        return cls(uri, settings.eval.mlflow_experiment, root)

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = (self.artifact_root / name).as_uri() if self.artifact_root else None
        return str(self.client.create_experiment(name, artifact_location=location))

    def log_run(self, result: dict[str, Any], files: list[Path]) -> str:
        """Log a finished run (params, metrics, ``files`` as artefacts); returns the MLflow run id."""
        dataset, corpus = result["dataset"], result["corpus"]
        params = {**result["params"], "engine": result.get("engine", {}).get("owned_by", ""),
                  "dataset_path": dataset["path"], "dataset_sha256": dataset["sha256"],
                  "dataset_cases": dataset["cases"], "dataset_dvc_md5": dataset.get("dvc_md5") or "",
                  "corpus_sha256": corpus.get("sha256", ""), "corpus_documents": corpus.get("documents", 0)}
        label = result["params"]["model"] + (f"@{result['params']['deployment']}" if result["params"]["deployment"]
                                             else "")
        run = self.client.create_run(self._experiment_id(self.experiment), run_name=f"{label} {result['started_at']}",
                                     tags={"sovereign.dataset_version": result["dataset"]["version"],
                                           "sovereign.model": result["params"]["model"]})
        run_id = str(run.info.run_id)
        try:
            for key, value in params.items():
                self.client.log_param(run_id, key, value)
            for key, value in result["metrics"].items():
                if value is not None:
                    self.client.log_metric(run_id, key, float(value))
            for path in files:
                self.client.log_artifact(run_id, str(path))
            dataset = Path(result["dataset"]["path"])
            if dataset.is_file():
                self.client.log_artifact(run_id, str(dataset), artifact_path="dataset")
        except Exception:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")
        return run_id

    def register(self, run_id: str, result: dict[str, Any]) -> str:
        """A new version of ``sovereign.<model>`` from ``run_id``, alias ``candidate``; returns the version."""
        name = registered_name(result["params"]["model"])
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description=f"Gateway model {result['params']['model']}")
        version = self.client.create_model_version(
            name, source=f"runs:/{run_id}/", run_id=run_id,
            tags={"deployment": result["params"]["deployment"], "dataset_version": result["dataset"]["version"]})
        self.client.set_registered_model_alias(name, CANDIDATE, version.version)
        return str(version.version)

    def promote(self, model: str, version: str, alias: str = CHAMPION, *, reason: str = "") -> dict[str, Any]:
        """Point ``alias`` of ``sovereign.<model>`` at ``version`` and log the move as a run.

        Returns ``{"model", "version", "alias", "previous", "run_id"}``.

        Raises:
            NotFoundError: no such registered model or version.
        """
        from mlflow.exceptions import MlflowException

        name = registered_name(model)
        try:
            self.client.get_model_version(name, version)
        except MlflowException as exc:
            raise NotFoundError(f"MLflow has no version {version} of {name} (run `sovereign eval run --register`).") \
                from exc
        try:
            previous: str | None = str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            previous = None
        run = self.client.create_run(self._experiment_id(f"{self.experiment}-promotions"),
                                     run_name=f"{name} {alias} -> v{version}")
        run_id = str(run.info.run_id)
        details = {"model": model, "version": version, "alias": alias, "previous": previous or "", "reason": reason}
        for key, value in details.items():
            self.client.log_param(run_id, key, value)
        self.client.set_registered_model_alias(name, alias, version)
        self.client.set_model_version_tag(name, version, f"promoted_to_{alias}", run_id)
        with tempfile.TemporaryDirectory() as tmp:
            record = Path(tmp) / "promotion.json"
            record.write_text(json.dumps(details, indent=2))
            self.client.log_artifact(run_id, str(record))
        self.client.set_terminated(run_id, status="FINISHED")
        return {**details, "previous": previous, "run_id": run_id}

    def aliases(self, model: str) -> dict[str, str]:
        """Alias -> version of ``sovereign.<model>`` ({} when it is not registered)."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_registered_model(registered_name(model))
        except MlflowException:
            return {}
        return {alias: str(version) for alias, version in (found.aliases or {}).items()}
