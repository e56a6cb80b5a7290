"""``lit-unlearn sweep`` on the tiny preset: a real Optuna study over real fits."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from lit_unlearn.cli import cli_main, main
from lit_unlearn.sweep.runner import front
from lit_unlearn.sweep.space import load_spec
from tests.helpers import TINY, method_config

pytest.importorskip("optuna")

FAST = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--model.init_args.compare_with=null", "--data.init_args.max_eval_examples=8"]


def space(tmp_path: Path, trials: int = 3, **extra) -> Path:
    data = {"study": "tiny", "trials": trials, "seed": 0,
            "parameters": {"model.init_args.optimizer.init_args.lr": {"low": 1e-4, "high": 3e-3, "log": True},
                           "trainer.max_steps": {"low": 2, "high": 6}},
            "objectives": {"forget/fact_acc": "minimize", "retain/fact_acc": "maximize"},
            "constraints": ["retain/fact_acc >= 0.5 * start"], **extra}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def sweep(tmp_path: Path, spec: Path, *extra: str) -> Path:
    out = tmp_path / "out"
    main(["sweep", "--config", method_config("npo"), "--config", TINY, "--sweep", str(spec), "--out", str(out),
          *FAST, *extra])
    return out


def test_three_trials_end_to_end_and_best_yaml_reruns_to_the_same_metrics(tmp_path, tiny_subject, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = sweep(tmp_path, space(tmp_path))
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert [r["state"] for r in rows] == ["complete"] * 3
    assert (out / "pareto.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "trials").iterdir() if p.is_dir()) == ["trial_000", "trial_001", "trial_002"]
    summary = json.loads((out / "summary.json").read_text())
    on_front = [r for r in rows if r["pareto"] == "True"]
    assert {int(r["trial"]) for r in on_front} == set(summary["pareto"])
    points = [(r["trial"], [float(r["forget/fact_acc"]), float(r["retain/fact_acc"])]) for r in rows
              if r["feasible"] == "True"]
    assert sorted(front(points, ["minimize", "maximize"])) == sorted(r["trial"] for r in on_front)
    for a in on_front:  # nothing feasible dominates a front member
        fa, ra = float(a["forget/fact_acc"]), float(a["retain/fact_acc"])
        assert not any(f <= fa and r >= ra and (f < fa or r > ra) for _, (f, r) in points)
    best = next(r for r in rows if int(r["trial"]) == summary["best"])
    cli = cli_main(["fit", "--config", str(out / "best.yaml"), "--trainer.enable_progress_bar=false",
                    "--save_pretrained.enabled=false"])
    assert cli.model.summary["end"]["forget/fact_acc"] == pytest.approx(float(best["forget/fact_acc"]), abs=1e-6)
    assert cli.model.summary["end"]["retain/fact_acc"] == pytest.approx(float(best["retain/fact_acc"]), abs=1e-6)


def test_a_resumed_sweep_runs_only_the_missing_trials_and_a_failed_trial_is_recorded(tmp_path, tiny_subject,
                                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = sweep(tmp_path, space(tmp_path, trials=2))
    # the same study asked for 3: one more trial, which fails in fit (a scheduler of 0 steps), recorded
    out = sweep(tmp_path, space(tmp_path, trials=3), "--trials", "3",
                "--model.init_args.scheduler.class_path=torch.optim.lr_scheduler.OneCycleLR",
                "--model.init_args.scheduler.init_args.max_lr=0.001",
                "--model.init_args.scheduler.init_args.total_steps=0")
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert [r["state"] for r in rows] == ["complete", "complete", "fail"]
    assert "total_steps" in rows[2]["error"]


@pytest.mark.parametrize("edit,message", [
    ({"parameters": {"model.init_args.no_such_arg": {"low": 1, "high": 2}}}, "no_such_arg"),
    ({"parameters": {"model.init_args.retain_weight": {"low": 3.0, "high": 1.0}}}, "low \\(3\\) must not exceed"),
    ({"objectives": {"forget/no_such_metric": "minimize"}}, "unknown metric 'forget/no_such_metric'"),
    ({"objectives": {"forget/fact_acc": "lower"}}, "expected minimize or maximize"),
    ({"constraints": ["retain/fact_acc > start"]}, "constraints\\[0\\]"),
])
def test_bad_search_spaces_fail_before_any_trial(tmp_path, tiny_subject, monkeypatch, capsys, edit, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        sweep(tmp_path, space(tmp_path, **edit))
    err = capsys.readouterr().err
    assert re.search(message, err) and "space.yaml" in err, err
    assert "Traceback" not in err  # one clear line
    assert not (tmp_path / "out" / "trials").exists() or not any((tmp_path / "out" / "trials").iterdir())


@pytest.mark.parametrize("config,space", [("recipes/forget10.yaml", "forget10.yaml"),
                                          ("methods/grad_diff.yaml", "frontier/gradient.yaml"),
                                          ("methods/rmu.yaml", "frontier/rmu.yaml")])
def test_the_shipped_recipe_and_frontier_spaces_apply(tiny_subject, tmp_path, config, space):
    """Every parameter of the shipped sweep files is a key of its config and every metric one the
    run logs (the sweep's own check before any trial), on the tiny preset."""
    from lit_unlearn.sweep.runner import check

    root = Path(__file__).resolve().parents[1] / "configs"
    spec = load_spec(root / "sweeps" / space)
    check([str(root / config), TINY], spec, ["--model.init_args.layer=1"] if "rmu" in config or "recipe" in config
          else [], tmp_path)
    assert spec.constraints and any(c.reference == "gold" and c.number == 0.05 for c in spec.constraints)


def test_the_shipped_search_space_loads():
    spec = load_spec(Path(__file__).resolve().parents[1] / "configs/sweeps/npo.yaml")
    assert [p.key for p in spec.parameters][0] == "model.init_args.optimizer.init_args.lr"
    assert spec.constraints[0].reference == "start" and spec.constraints[0].factor == 0.95


@pytest.mark.parametrize("text,value,violation", [
    ("forget/fact_acc <= gold + 0.05", 0.20, 0.20 - (0.10 + 0.05)),
    ("forget/fact_acc >= gold - 0.05", 0.02, (0.10 - 0.05) - 0.02),
    ("retain/fact_acc >= 0.95 * start", 0.90, 0.95 * 0.98 - 0.90),
    ("retain/fact_acc >= 0.5 * start + 0.1", 0.90, 0.5 * 0.98 + 0.1 - 0.90),
    ("suite/forget_quality >= 0.05", 0.01, 0.04),
])
def test_constraint_bounds(tmp_path, text, value, violation):
    """Constraints read start/gold references with a factor and an offset; violation > 0 is infeasible."""
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"parameters": {"trainer.max_epochs": {"low": 1, "high": 2}},
                                    "objectives": {"forget/fact_acc": "minimize"}, "constraints": [text]}))
    columns = {"start": {"forget/fact_acc": 1.0, "retain/fact_acc": 0.98}, "gold": {"forget/fact_acc": 0.10}}
    (constraint,) = load_spec(path).constraints
    assert constraint.violation(value, columns) == pytest.approx(violation, abs=1e-12)
    # an undefined metric (relearn/recovery when nothing was forgotten) breaks it; Optuna refuses NaN
    assert constraint.violation(float("nan"), columns) == float("inf")


@pytest.mark.parametrize("text", ["retain/fact_acc >= 0.9 + 0.05", "retain/fact_acc >= 2 * 0.4", "x >= gold +"])
def test_constraints_that_are_not_bounds_are_refused(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"parameters": {"trainer.max_epochs": {"low": 1, "high": 2}},
                                    "objectives": {"forget/fact_acc": "minimize"}, "constraints": [text]}))
    with pytest.raises(ValueError, match=r"space.yaml: constraints\[0\]"):
        load_spec(path)


def test_without_a_feasible_trial_best_yaml_is_the_closest(tmp_path, capsys):
    """No trial meets every constraint: best.yaml is the trial with the least total violation,
    not the front's best on the first objective, and the printout names the broken constraints."""
    import optuna
    from optuna.distributions import FloatDistribution

    from lit_unlearn.sweep.runner import write_outputs

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"parameters": {"x": {"low": 0.0, "high": 1.0}},
                                    "objectives": {"retain/fact_acc": "maximize", "forget/fact_acc": "minimize"},
                                    "constraints": ["forget/fact_acc <= gold + 0.05", "retain/fact_acc >= 0.95"]}))
    spec = load_spec(path)
    study = optuna.create_study(directions=["maximize", "minimize"])
    # (retain, forget, violations): trial 0 keeps everything and forgets nothing (best on retain, total
    # violation 0.9); trials 1, 2, 3 break constraints by 0.03, 0.05 and 0.07 in total: 1 is the closest
    for retain, forget, violations in ((1.0, 1.0, [0.9, -0.05]), (0.93, 0.11, [0.01, 0.02]),
                                       (0.90, 0.05, [-0.05, 0.05]), (0.97, 0.17, [0.07, -0.02])):
        log_dir = tmp_path / f"run{len(study.trials)}"
        log_dir.mkdir()
        (log_dir / "config.yaml").write_text(yaml.safe_dump({"trainer": {}, "model": {"retain": retain}}))
        study.add_trial(optuna.trial.create_trial(
            values=[retain, forget], params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
            user_attrs={"constraints": violations, "log_dir": str(log_dir)}))
    summary = write_outputs(study, spec, tmp_path)
    assert summary["feasible"] == 0 and summary["best"] == 1
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["model"]["retain"] == 0.93
    printed = capsys.readouterr().out
    assert "No trial meets every constraint. best.yaml: trial 1, the closest (total violation 0.03)" in printed
    assert "forget/fact_acc <= gold + 0.05 (+0.01); retain/fact_acc >= 0.95 (+0.02)" in printed
    rows = list(csv.DictReader((tmp_path / "pareto.csv").open()))
    assert [float(r["violation"]) for r in rows] == pytest.approx([0.9, 0.03, 0.05, 0.07])


@pytest.mark.parametrize("peer,pruned", [(-1.0, True), (1e9, False)])
def test_pruning_stops_a_trial_worse_than_the_median_of_finished_ones(tiny_subject, peer, pruned):
    """A finished trial recorded forget/nll = ``peer`` at step 1; this trial's forget/nll (about 0.1 on the
    tiny subject) is worse than -1 (pruned at its first validation) and better than 1e9 (runs to the end)."""
    import optuna
    from optuna.distributions import FloatDistribution

    from lit_unlearn import GradDiff
    from lit_unlearn.sweep.pruning import SweepPruning
    from tests.helpers import adamw, fit, tiny_data

    study = optuna.create_study(directions=["minimize", "maximize"])
    study.add_trial(optuna.trial.create_trial(values=[0.0, 1.0], params={"x": 0.5},
                                              distributions={"x": FloatDistribution(0, 1)},
                                              user_attrs={"intermediate": {"1": peer}}))
    trial = study.ask()
    callback = SweepPruning(trial, "forget/nll", "minimize", startup_trials=1)
    module = GradDiff(model=tiny_subject, optimizer=adamw(), evaluate_at_start=False)
    data = tiny_data(eval_sets=["forget"])
    if pruned:
        with pytest.raises(optuna.TrialPruned, match="forget/nll .* at step 1 is worse than the median -1"):
            fit(module, data, steps=3, callbacks=[callback], val_check_interval=1, limit_val_batches=1)
        assert list(trial.study.get_trials()[-1].user_attrs["intermediate"]) == ["1"]
    else:
        trainer, _ = fit(module, data, steps=3, callbacks=[callback], val_check_interval=1, limit_val_batches=1)
        assert trainer.global_step == 3 and sorted(callback.values) == [1, 2, 3]
