"""Running a sweep: one Optuna study, each trial a normal ``fit`` run, shared by any number of workers."""

from __future__ import annotations

import copy
import json
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import yaml

from lit_unlearn.sweep.space import SweepSpec
from lit_unlearn.utils import atomic_write_text

# metric prefixes that callbacks log (the datamodule's sets are checked by name)
CALLBACK_PREFIXES = ("suite/", "relearn/", "stability/", "train/", "eval/", "tradeoff/")
TEACHER_FORCED = ("nll", "prob", "token_acc", "answer_em", "fact_acc")


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def open_study(spec: SweepSpec, storage: str):
    """The study (created or joined), seeded multi-objective TPE, with constraints when given;
    stale trials of a killed worker (no heartbeat for 2 x ``heartbeat`` s) fail and are retried once."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; we rely on them knowingly
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                store = RDBStorage(storage, heartbeat_interval=spec.heartbeat, grace_period=2 * spec.heartbeat,
                                   heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                                   engine_kwargs={"connect_args": {"timeout": 60}} if storage.startswith("sqlite")
                                   else None)
            break
        except (IntegrityError, OperationalError, ProgrammingError):
            # workers started together on a new database race to create its tables and stamp its
            # schema version (RDBStorage does not lock); the losers find them made on a retry
            if attempt == 4:
                raise
            time.sleep(1)
    sampler = _trial_seeded(optuna.samplers.TPESampler)(
        seed=spec.seed, n_startup_trials=min(10, max(2, spec.trials // 3)),
        multivariate=True)  # constraints: Trial.set_constraint
    return optuna.create_study(study_name=spec.study, storage=store, sampler=sampler, load_if_exists=True,
                               directions=list(spec.objectives.values()))


def _trial_seeded(sampler_class):
    """``sampler_class`` whose random state is reset from (seed, trial number) before each trial.
    Seeded once per process, every worker of a shared study (and a restarted sweep) would draw the
    same points as the first: trial k of worker B repeated trial k of worker A."""
    import numpy as np

    class TrialSeeded(sampler_class):
        def __init__(self, seed: int, **kwargs: Any) -> None:
            super().__init__(seed=seed, **kwargs)
            self._sweep_seed = seed

        def before_trial(self, study, trial) -> None:
            state = np.random.SeedSequence([self._sweep_seed, trial.number]).generate_state(2)
            self._rng.rng.seed(int(state[0]))  # TPE's own draws and its random start-up sampler's
            self._random_sampler._rng.rng.seed(int(state[1]))
            super().before_trial(study, trial)

    return TrialSeeded


def finished(study) -> int:
    """Trials that count towards ``trials``: complete, pruned (not surplus), failed (not retried)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials} - {None}  # set on a stale trial's retry
    return sum(1 for t in trials if (t.state == TrialState.COMPLETE
                                     or (t.state == TrialState.PRUNED and not t.user_attrs.get("surplus"))
                                     or (t.state == TrialState.FAIL and t.number not in retried)))


def base_callbacks(configs: list[str]) -> list[Any] | None:
    """``trainer.callbacks`` as the layered configs leave it (a later list replaces an earlier one)."""
    callbacks = None
    for path in configs:
        data = yaml.safe_load(Path(path).read_text()) or {}
        found = (data.get("trainer") or {}).get("callbacks") if isinstance(data, dict) else None
        if found is not None:
            callbacks = found if isinstance(found, list) else [found]
    return callbacks


def overlay(params: dict[str, Any], callbacks: list[Any] | None) -> dict[str, Any]:
    """A config holding ``params`` (dotted keys); ``trainer.callbacks.<Class>.<key>`` edits that
    callback of the configs' list, which the overlay then repeats whole."""
    out: dict[str, Any] = {}
    edited = copy.deepcopy(callbacks) if callbacks is not None else None
    for key, value in params.items():
        parts = key.split(".")
        if parts[:2] == ["trainer", "callbacks"] and len(parts) > 3:
            name = parts[2]
            matches = [c for c in edited or [] if isinstance(c, dict) and str(c.get("class_path", "")).split(".")[-1]
                       == name]
            if not matches:
                have = [str(c.get("class_path", "")).split(".")[-1] for c in edited or [] if isinstance(c, dict)]
                raise ValueError(f"parameter {key!r}: the configs have no {name} callback (they have {have})")
            node = matches[0]
            for part in parts[3:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    if edited is not None and any(k.startswith("trainer.callbacks.") for k in params):
        out.setdefault("trainer", {})["callbacks"] = edited
    return out


def check_metrics(spec: SweepSpec, datamodule) -> None:
    """Every objective, constraint and pruning metric is one the run will have, or a callback's."""
    sets = list(getattr(datamodule, "eval_records", {}) or {})
    known = [f"{s}/{m}" for s in sets for m in TEACHER_FORCED]
    for metric in spec.metrics:
        if metric in known or metric.startswith(CALLBACK_PREFIXES):
            continue
        raise ValueError(f"sweep file {spec.path}: unknown metric {metric!r}; the data's validation sets give "
                         f"{', '.join(known[:10])}{', ...' if len(known) > 10 else ''} (and callbacks log "
                         f"{', '.join(p + '...' for p in CALLBACK_PREFIXES)})")


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def error_text(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(err), err)).strip()
