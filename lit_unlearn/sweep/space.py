"""The search-space file of ``lit-unlearn sweep``: parameters, objectives, constraints, and settings.

```yaml
study: npo_forget10            # default: the file's name
trials: 20                     # in total, over every worker
seed: 0
parameters:                    # any config key; callbacks by class name
  model.init_args.optimizer.init_args.lr: {low: 1.0e-5, high: 1.0e-3, log: true}
  model.init_args.retain_weight: {low: 1, high: 40}
  trainer.max_epochs: {low: 2, high: 10, type: int}
  model.init_args.beta: {choices: [0.05, 0.1, 0.5]}
  trainer.callbacks.StabilityGap.init_args.every_n_steps: {choices: [5, 10]}
objectives:                    # metric: minimize | maximize (start/end/gold summary, logged metrics)
  forget/fact_acc: minimize
  retain/fact_acc: maximize
constraints:                   # feasible trials only are chosen for best.yaml
  - retain/fact_acc >= 0.95 * start
pruning: {metric: forget/fact_acc, direction: minimize, warmup_steps: 10, startup_trials: 3}
```
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DIRECTIONS = ("minimize", "maximize")
_NUMBER = r"[-+]?[\d.]+(?:e[-+]?\d+)?"
_CONSTRAINT = re.compile(rf"^\s*([\w./-]+)\s*(>=|<=)\s*(?:({_NUMBER})\s*\*\s*)?(start|gold|{_NUMBER})"
                         rf"(?:\s*([-+])\s*([\d.]+(?:e[-+]?\d+)?))?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Parameter:
    """One searched config key: a float/int range (optionally log-scaled) or a categorical choice."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: str = "float"  # float | int | categorical
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class Constraint:
    """``metric >= | <= value``, the value a number or ``k * start + c`` / ``k * gold + c`` (that
    metric's value for the start model / the gold retain model; ``k`` and ``+ c`` optional, so
    ``forget/fact_acc <= gold + 0.05`` bounds the distance to gold). Optuna's convention: feasible
    when <= 0."""

    text: str
    metric: str
    op: str
    factor: float
    reference: str  # "start", "gold" or "number"
    number: float = 0.0  # the bound itself (reference "number") or the offset added to k * reference

    def bound(self, columns: dict[str, dict[str, float]]) -> float:
        if self.reference == "number":
            return self.number
        value = columns.get(self.reference, {}).get(self.metric)
        if value is None:
            raise ValueError(f"constraint {self.text!r}: the {self.reference} model has no '{self.metric}'")
        return self.factor * value + self.number

    def violation(self, value: float, columns: dict[str, dict[str, float]]) -> float:
        """How far ``value`` is on the wrong side of the bound (<= 0: met). An undefined value
        (NaN, e.g. ``relearn/recovery`` of a run that forgot nothing) breaks the constraint."""
        bound = self.bound(columns)
        if math.isnan(value) or math.isnan(bound):
            return math.inf
        return bound - value if self.op == ">=" else value - bound


@dataclass
class SweepSpec:
    path: Path
    study: str
    trials: int
    seed: int
    parameters: list[Parameter]
    objectives: dict[str, str]
    constraints: list[Constraint] = field(default_factory=list)
    pruning: dict[str, Any] | None = None
    heartbeat: int = 30  # seconds; a trial without a heartbeat for 2x this is a killed worker's

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys([*self.objectives, *(c.metric for c in self.constraints),
                                   *([self.pruning["metric"]] if self.pruning else [])]))


def _error(path: Path, where: str, message: str) -> ValueError:
    return ValueError(f"sweep file {path}: {where}: {message}")


def _parameter(path: Path, key: str, spec: Any) -> Parameter:
    where = f"parameters.{key}"
    if not isinstance(spec, dict):
        raise _error(path, where, f"expected {{low, high[, log, type]}} or {{choices: [...]}}, got {spec!r}")
    unknown = set(spec) - {"low", "high", "log", "type", "choices"}
    if unknown:
        raise _error(path, where, f"unknown field(s) {sorted(unknown)}; expected low, high, log, type or choices")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise _error(path, where, f"`choices` must be a non-empty list, got {choices!r}")
        return Parameter(key, kind="categorical", choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise _error(path, where, "a range needs both `low` and `high`")
    kind = spec.get("type", "int" if all(isinstance(spec[k], int) and not isinstance(spec[k], bool)
                                         for k in ("low", "high")) else "float")
    if kind not in ("float", "int"):
        raise _error(path, where, f"`type` must be float or int, got {kind!r}")
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (TypeError, ValueError):
        raise _error(path, where, f"`low` and `high` must be numbers, got {spec['low']!r} and "
                     f"{spec['high']!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise _error(path, where, f"low ({low:g}) must not exceed high ({high:g})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise _error(path, where, f"`log` must be true or false, got {log!r}")
    if log and low <= 0:
        raise _error(path, where, f"a log scale needs low > 0, got {low:g}")
    return Parameter(key, low, high, log, kind)


def _constraint(path: Path, i: int, text: Any) -> Constraint:
    m = _CONSTRAINT.match(text) if isinstance(text, str) else None
    if m is None:
        raise _error(path, f"constraints[{i}]", f"expected '<metric> >= <number>' or '<metric> >= <k> * start "
                     f"[+ <c>]' (or gold; <= too), got {text!r}")
    metric, op, factor, ref, sign, offset = m.groups()
    if ref.lower() in ("start", "gold"):
        shift = float(offset) * (-1 if sign == "-" else 1) if offset else 0.0
        return Constraint(text, metric, op, float(factor or 1), ref.lower(), shift)
    if factor is not None or offset is not None:
        raise _error(path, f"constraints[{i}]", f"'<k> * <number>' or '<number> + <c>' is not a bound; write the "
                     f"result, got {text!r}")
    return Constraint(text, metric, op, 1.0, "number", float(ref))


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a search-space file; every problem names the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"sweep file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise _error(path, "top level", "expected a mapping")
    unknown = set(data) - {"study", "trials", "seed", "parameters", "objectives", "constraints", "pruning", "heartbeat"}
    if unknown:
        raise _error(path, "top level", f"unknown field(s) {sorted(unknown)}")
    params = data.get("parameters")
    if not isinstance(params, dict) or not params:
        raise _error(path, "parameters", "at least one parameter is needed")
    objectives = data.get("objectives")
    if not isinstance(objectives, dict) or not objectives:
        raise _error(path, "objectives", "at least one '<metric>: minimize|maximize' is needed")
    for metric, direction in objectives.items():
        if direction not in DIRECTIONS:
            raise _error(path, f"objectives.{metric}", f"expected minimize or maximize, got {direction!r}")
    trials, seed, heartbeat = data.get("trials", 10), data.get("seed", 0), data.get("heartbeat", 30)
    for name, value in (("trials", trials), ("heartbeat", heartbeat)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _error(path, name, f"expected an integer >= 1, got {value!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _error(path, "seed", f"expected an integer, got {seed!r}")
    constraints = data.get("constraints") or []
    if not isinstance(constraints, list):
        raise _error(path, "constraints", f"expected a list, got {constraints!r}")
    pruning = data.get("pruning")
    if pruning is not None:
        if not isinstance(pruning, dict) or "metric" not in pruning:
            raise _error(path, "pruning", "expected {metric, direction[, warmup_steps, startup_trials]}")
        unknown = set(pruning) - {"metric", "direction", "warmup_steps", "startup_trials"}
        if unknown or pruning.get("direction", "minimize") not in DIRECTIONS:
            raise _error(path, "pruning", f"unknown field(s) {sorted(unknown)} or direction "
                         f"{pruning.get('direction')!r}; expected metric, direction (minimize|maximize), "
                         "warmup_steps, startup_trials")
        pruning = {"direction": "minimize", "warmup_steps": 0, "startup_trials": 3, **pruning}
    study = data.get("study", path.stem)
    if not isinstance(study, str) or not re.fullmatch(r"[\w.-]+", study):
        raise _error(path, "study", f"expected a name of letters, digits, '_', '-' or '.', got {study!r}")
    return SweepSpec(path, study, trials, seed, [_parameter(path, k, v) for k, v in params.items()],
                     dict(objectives), [_constraint(path, i, c) for i, c in enumerate(constraints)], pruning,
                     heartbeat)
