"""RunSummary: the start / end / gold table of a run, the gold model's column, run_info.json beside the
logs, and the start and gold columns shown again when a saved model is tested."""

import json
from pathlib import Path

import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from lit_unlearn import GradDiff, RunSummary
from lit_unlearn.cli import cli_main
from tests.helpers import TINY, adamw, fit, method_config, quiet_trainer, tiny_data
from tests.helpers.cli import cli_fit


def header(printed: str) -> list[str]:
    """The column titles of the last summary table printed."""
    return [line for line in printed.splitlines() if line.startswith("metric")][-1].split()


def test_gold_column_is_the_gold_model_evaluated_directly_and_is_printed(tiny_subject, tiny_gold, capsys):
    module = GradDiff(model=tiny_subject, optimizer=adamw(), compare_with=tiny_gold)
    fit(module, tiny_data(), steps=2, callbacks=[RunSummary()])
    printed = capsys.readouterr().out
    gold = module.summary["gold"]
    direct = quiet_trainer()
    direct.validate(GradDiff(model=tiny_gold), datamodule=tiny_data(), verbose=False)
    assert set(gold) == {k for k in direct.callback_metrics if "/" in k} and len(gold) >= 10
    for key, value in gold.items():
        assert value == pytest.approx(float(direct.callback_metrics[key]), rel=1e-5, abs=1e-6), key
    # the gold model does not know the forget people, the starting model does: the column means something
    assert gold["forget/fact_acc"] <= 0.2 and module.summary["start"]["forget/fact_acc"] >= 0.95
    assert gold["retain/fact_acc"] >= 0.95
    assert "lit-unlearn summary (fit" in printed and header(printed) == ["metric", "start", "end", "gold", "retain"]
    row = [line.split() for line in printed.splitlines() if line.startswith("forget/fact_acc ")][0]
    assert [float(x) for x in row[1:]] == pytest.approx(
        [module.summary[c]["forget/fact_acc"] for c in ("start", "end", "gold")], abs=5e-5)
    assert f"vs gold retain model {gold['forget/fact_acc']:.3f}" in printed


def test_run_info_beside_the_logs_and_no_gold_column_when_off(tiny_subject, tiny_gold, tmp_path, capsys):
    module = GradDiff(model=tiny_subject, optimizer=adamw(), compare_with=tiny_gold, retain_weight=0.5)
    trainer, _ = fit(module, tiny_data(), steps=1, callbacks=[RunSummary(gold=False)],
                     logger=TensorBoardLogger(tmp_path, name="runs"))
    info = json.loads((Path(trainer.log_dir) / "run_info.json").read_text())
    assert info["method"] == "GradDiff" and info["hyperparameters"]["retain_weight"] == 0.5
    assert info["seed"] == "0" and len(info["data"]["sha256"]["forget"]) == 64
    assert set(module.summary) == {"start", "end"}  # gold=False: the gold model is not evaluated
    assert header(capsys.readouterr().out) == ["metric", "start", "end"]


def test_testing_a_saved_model_shows_its_start_and_gold_columns(tmp_path, tiny_subject, tiny_gold, capsys):
    config = method_config("grad_ascent")
    fitted = cli_fit("--config", config, "--config", TINY, "--model.init_args.optimizer.init_args.lr=1e-3",
                     save_dir=tmp_path / "runs")
    saved = Path(fitted.trainer.log_dir) / "model"
    capsys.readouterr()
    tested = cli_main(["test", "--config", config, "--config", TINY, f"--model.init_args.model={saved}",
                       f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
                       "--trainer.enable_progress_bar=false"])
    summary = tested.model.summary
    assert summary["start"] == fitted.model.summary["start"] and summary["gold"] == fitted.model.summary["gold"]
    assert summary["test"]["forget/nll"] == pytest.approx(fitted.model.summary["end"]["forget/nll"], rel=1e-4)
    assert summary["start"]["forget/fact_acc"] >= 0.95 and summary["gold"]["forget/fact_acc"] <= 0.2
    assert header(capsys.readouterr().out) == ["metric", "start", "test", "gold", "retain"]
