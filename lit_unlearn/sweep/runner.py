"""``lit-unlearn sweep``: the loop every worker runs, and the outputs (Pareto front, figure, best.yaml)."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import yaml

from lit_unlearn.sweep.space import Parameter, SweepSpec, load_spec
from lit_unlearn.sweep.study import (
    base_callbacks,
    check_metrics,
    default_storage,
    error_text,
    finished,
    open_study,
    overlay,
    write_json,
)
from lit_unlearn.utils import atomic_file, atomic_write_text

RUN_ARGS = ["--save_pretrained.enabled=false", "--summary.verbose=false", "--trainer.enable_checkpointing=false"]


def _probe_value(p: Parameter) -> Any:
    return p.choices[0] if p.kind == "categorical" else (int(p.low) if p.kind == "int" else p.low)


def _config_args(configs: list[str]) -> list[str]:
    return [a for c in configs for a in ("--config", str(c))]


def _write_overlay(path: Path, params: dict[str, Any], callbacks) -> Path:
    atomic_write_text(path, yaml.safe_dump(overlay(params, callbacks), sort_keys=False))
    return path


def check(configs: list[str], spec: SweepSpec, overrides: list[str], out: Path) -> None:
    """Before any trial: every parameter is a key the configs accept (at its low value or first
    choice) and every metric is one the run logs."""
    from lit_unlearn.cli import cli_main

    # a name of its own: a worker started a moment later on the same --out would otherwise read
    # (or lose) this one's file, which it removes when done
    probe = _write_overlay(out / f"check-{uuid.uuid4().hex[:12]}.yaml",
                           {p.key: _probe_value(p) for p in spec.parameters}, base_callbacks(configs))
    try:
        cli = cli_main([*_config_args(configs), "--config", str(probe), *overrides, *RUN_ARGS], run=False)
    except Exception as err:
        raise ValueError(f"sweep file {spec.path}: the parameters do not apply to the configs: {err}") from None
    finally:
        probe.unlink(missing_ok=True)
    check_metrics(spec, cli.datamodule)


def sweep(configs: list[str], spec: SweepSpec, overrides: list[str], out: Path,
          storage: str | None = None) -> dict[str, Any]:
    """Run trials of the study until ``spec.trials`` are finished over all workers, then write the
    outputs; returns ``summary.json``'s contents (``best``: the trial best.yaml reruns)."""
    import optuna

    from lit_unlearn.cli import cli_main
    from lit_unlearn.sweep.pruning import SweepPruning

    out.mkdir(parents=True, exist_ok=True)
    check(configs, spec, overrides, out)
    study = open_study(spec, storage or default_storage(out))
    callbacks = base_callbacks(configs)
    (out / "trials").mkdir(exist_ok=True)
    print(f"lit-unlearn sweep: study '{spec.study}' ({finished(study)}/{spec.trials} trials finished) in {out}",
          flush=True)

    def objective(trial) -> list[float]:
        from optuna.trial import TrialState

        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number < trial.number]
        if finished(study) + len(running) >= spec.trials:  # other workers hold the last trials
            trial.set_user_attr("surplus", True)
            if running:
                print(f"lit-unlearn sweep: trial(s) {[t.number for t in running]} are running elsewhere; if a killed "
                      f"sweep left them, they fail after {2 * spec.heartbeat} s without a heartbeat: rerun then "
                      "and they are run again", flush=True)
            study.stop()
            raise optuna.TrialPruned("surplus: the study has its trials")
        try:
            params = {p.key: p.suggest(trial) for p in spec.parameters}
            name = f"trial_{trial.number:03d}"
            cfg = _write_overlay(out / "trials" / f"{name}.yaml", params, callbacks)
            args = [*_config_args(configs), "--config", str(cfg), *overrides, *RUN_ARGS,
                    f"--trainer.logger.init_args.save_dir={out}", "--trainer.logger.init_args.name=trials",
                    f"--trainer.logger.init_args.version={name}"]
            cli = cli_main(args, run=False)
            if spec.pruning:
                cli.trainer.callbacks.append(SweepPruning(trial, **spec.pruning))
            print(f"lit-unlearn sweep: {name} {params}", flush=True)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            columns = _columns(cli)
            trial.set_user_attr("log_dir", str(cli.trainer.log_dir))
            end = columns["end"]
            missing = [m for m in spec.metrics if m not in end]
            if missing:
                raise ValueError(f"the run logged no {missing}; it has {sorted(end)}")
            trial.set_user_attr("metrics", {m: end[m] for m in spec.metrics})
            trial.set_user_attr("reference", {c: {m: columns[c][m] for m in spec.metrics if m in columns[c]}
                                              for c in ("start", "gold")})
            if spec.constraints:  # <= 0: feasible (the sampler reads them too)
                violations = [c.violation(end[c.metric], columns) for c in spec.constraints]
                trial.set_user_attr("constraints", violations)
                for i, v in enumerate(violations):
                    trial.set_constraint(f"c{i}", v)
            values = [end[m] for m in spec.objectives]
            cli.trainer.logger.log_hyperparams(params, {f"sweep/{m}": end[m] for m in spec.metrics})
            return values
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr("error", error_text(err))
            print(f"lit-unlearn sweep: trial {trial.number} failed: {error_text(err)}", flush=True)
            raise

    def stop_when_done(study, trial) -> None:
        if finished(study) >= spec.trials:
            study.stop()

    if finished(study) < spec.trials:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(objective, catch=(Exception,), callbacks=[stop_when_done], gc_after_trial=True)
    return write_outputs(study, spec, out)


def _columns(cli) -> dict[str, dict[str, float]]:
    module, trainer = cli.model, cli.trainer
    end = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    end.update(module.summary.get("end", {}))
    return {"start": dict(module.summary.get("start", {})), "end": end, "gold": dict(module.summary.get("gold", {}))}


# ---------------------------------------------------------------- outputs
def front(points: list[tuple[Any, list[float]]], directions: list[str]) -> list[Any]:
    """The non-dominated items of ``points`` ``[(item, values)]`` under ``directions``."""
    sign = [1.0 if d == "minimize" else -1.0 for d in directions]
    keyed = [(item, [s * v for s, v in zip(sign, values)]) for item, values in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return [item for item, v in keyed if not any(dominates(w, v) for _, w in keyed)]


def feasible(trial) -> bool:
    return all(c <= 0 for c in trial.user_attrs.get("constraints", []))


def violation(trial) -> float:
    """The sum of a trial's constraint violations (0 when it meets them all)."""
    return sum(max(0.0, c) for c in trial.user_attrs.get("constraints", []))


def write_outputs(study, spec: SweepSpec, out: Path) -> dict[str, Any]:
    """``pareto.csv`` (every trial, its front membership), ``pareto.png`` and ``best.yaml``; prints the front."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    ok = [t for t in done if feasible(t)]
    directions = list(spec.objectives.values())
    pareto = front([(t, list(t.values)) for t in (ok or done)], directions)
    best = None
    first = 1.0 if directions[0] == "minimize" else -1.0
    if ok or not spec.constraints:
        best = min(pareto, key=lambda t: (first * t.values[0], t.number)) if pareto else None
    elif done:  # nothing meets every constraint: the closest trial (least total violation)
        best = min(done, key=lambda t: (violation(t), first * t.values[0], t.number))
    keys = [p.key for p in spec.parameters]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["trial", "state", "pareto", "feasible", "violation", *spec.objectives, *keys, "error"])
    for t in trials:
        values = list(t.values) if t.values is not None else [""] * len(spec.objectives)
        complete = t.state == TrialState.COMPLETE
        writer.writerow([t.number, t.state.name.lower(), t in pareto, feasible(t) if complete else "",
                         violation(t) if complete and spec.constraints else "", *values,
                         *(t.params.get(k, "") for k in keys), t.user_attrs.get("error", "")])
    atomic_write_text(out / "pareto.csv", buf.getvalue())
    summary = {"study": spec.study, "trials": {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState},
               "pareto": [t.number for t in pareto], "best": best.number if best else None,
               "feasible": len(ok), "objectives": spec.objectives}
    write_json(out / "summary.json", summary)
    _table(spec, pareto, best, len(trials), closest=bool(spec.constraints and done and not ok))
    if best is not None:
        write_best(best, spec, out)
    _figure(spec, done, pareto, best, out)
    return summary


def write_best(trial, spec: SweepSpec, out: Path) -> None:
    """The chosen trial's complete config (as the CLI saved it) to rerun with ``lit-unlearn fit --config best.yaml``."""
    config = Path(trial.user_attrs["log_dir"]) / "config.yaml"
    data = yaml.safe_load(config.read_text())
    logger = data.get("trainer", {}).get("logger")
    if isinstance(logger, dict) and isinstance(logger.get("init_args"), dict):
        logger["init_args"].update({"save_dir": "runs", "name": f"{spec.study}_best", "version": None})
    data.setdefault("save_pretrained", {})["enabled"] = True
    data.setdefault("summary", {})["verbose"] = True
    head = (f"# lit-unlearn sweep '{spec.study}': trial {trial.number}, "
            + ", ".join(f"{m} {v:.4g}" for m, v in zip(spec.objectives, trial.values))
            + f"\n#   lit-unlearn fit --config {out / 'best.yaml'}\n")
    atomic_write_text(out / "best.yaml", head + yaml.safe_dump(data, sort_keys=False))


def _table(spec: SweepSpec, pareto: list, best, total: int, closest: bool = False) -> None:
    names = list(spec.objectives)
    print(f"lit-unlearn sweep '{spec.study}': Pareto front ({len(pareto)} of {total} trials)")
    print("trial  " + "  ".join(f"{n:>18}" for n in names) + "  params")
    for t in sorted(pareto, key=lambda t: t.values[0]):
        mark = "*" if best is not None and t.number == best.number else " "
        params = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in t.params.items())
        print(f"{t.number:>4}{mark}  " + "  ".join(f"{v:>18.4f}" for v in t.values) + f"  {params}")
    if closest:  # the front above is of infeasible trials
        broken = [f"{c.text} ({v:+.4g})" for c, v in zip(spec.constraints, best.user_attrs["constraints"]) if v > 0]
        print(f"No trial meets every constraint. best.yaml: trial {best.number}, the closest "
              f"(total violation {violation(best):.4g}); it breaks {'; '.join(broken)}")
    elif best is not None:
        print(f"(* best.yaml: trial {best.number})")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _figure(spec: SweepSpec, done: list, pareto: list, best, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(spec.objectives)
    x_name, y_name = names[0], names[1] if len(names) > 1 else None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    styles = ({"c": "lightgray", "edgecolors": "gray", "label": "trials"},
              {"c": "gray", "marker": "x", "label": "trials breaking a constraint"})
    for group, style in zip(([t for t in done if feasible(t)], [t for t in done if not feasible(t)]), styles):
        if group:
            ax.scatter([t.values[0] for t in group], [t.values[1] if y_name else t.number for t in group], **style)
    ordered = sorted(pareto, key=lambda t: t.values[0])
    ax.plot([t.values[0] for t in ordered], [t.values[1] if y_name else t.number for t in ordered], "o-",
            c="tab:red", label="Pareto front" if not spec.constraints or any(feasible(t) for t in pareto)
            else "Pareto front (no trial meets the constraints)")
    for column, marker, color in (("start", "*", "black"), ("gold", "P", "tab:green")):
        ref = next((t.user_attrs.get("reference", {}).get(column, {}) for t in done), {})
        if x_name in ref and (y_name is None or y_name in ref):
            ax.scatter([ref[x_name]], [ref[y_name]] if y_name else [0], marker=marker, s=160, c=color,
                       label=f"{column} model" if column == "start" else "gold retain model")
    if best is not None:
        ax.scatter([best.values[0]], [best.values[1] if y_name else best.number], s=220, facecolors="none",
                   edgecolors="tab:blue", linewidths=2, label="best.yaml")
    ax.set_xlabel(f"{x_name} ({spec.objectives[x_name]})")
    ax.set_ylabel(f"{y_name} ({spec.objectives[y_name]})" if y_name else "trial")
    ax.set_title(f"sweep '{spec.study}'")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(out / "pareto.png") as tmp:  # a temp name of its own: workers may write at once
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv: list[str]) -> None:
    """``lit-unlearn sweep --config ... --sweep space.yaml [--out DIR] [--storage URL] [--trials N] [overrides]``."""
    args, configs, passthrough = {"--sweep": None, "--out": None, "--storage": None, "--trials": None}, [], []
    i = 1
    while i < len(argv):
        key, eq, value = argv[i].partition("=")
        if key in args or key == "--config":
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"sweep: {key} needs a value")
                value, i = argv[i + 1], i + 1
            if key == "--config":
                configs.append(value)
            else:
                args[key] = value
        else:
            passthrough.append(argv[i])
        i += 1
    if not args["--sweep"] or not configs:
        raise ValueError("sweep: usage: lit-unlearn sweep --config <method config> [--config ...] --sweep "
                         "<search space YAML> [--out DIR] [--storage URL] [--trials N] [fit overrides]")
    for c in configs:
        if not Path(c).is_file():
            raise FileNotFoundError(f"sweep: --config {c} does not exist")
    spec = load_spec(args["--sweep"])
    if args["--trials"] is not None:
        if not str(args["--trials"]).isdigit() or int(args["--trials"]) < 1:
            raise ValueError(f"sweep: --trials must be an integer >= 1, got {args['--trials']!r}")
        spec.trials = int(args["--trials"])
    out = Path(args["--out"] or Path("runs") / "sweep" / spec.study)
    sweep(configs, spec, passthrough, out, args["--storage"])


__all__ = ["front", "main", "sweep", "write_outputs"]
