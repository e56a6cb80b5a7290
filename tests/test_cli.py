import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_unlearn.cli import cli_main
from lit_unlearn.datamodules.fictitious import FictitiousBenchmark

ROOT = Path(__file__).resolve().parents[1]
METHOD_CONFIGS = sorted((ROOT / "configs" / "methods").glob("*.yaml")) + [ROOT / "configs" / "quickstart.yaml"]
TINY = str(ROOT / "configs" / "data" / "fictitious_tiny.yaml")


def run_fit(*args, tmp_path):
    return cli_main(["fit", *args, "--trainer.max_steps=2", "--trainer.enable_progress_bar=false",
                     f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", "--trainer.enable_checkpointing=false"])


# the tiny built-in model has 2 layers; configs that name a layer of the 4-layer small model
TINY_OVERRIDES = {"rmu": ["--model.init_args.layer=1"], "srmu": ["--model.init_args.layer=1"]}


@pytest.mark.parametrize("config", METHOD_CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_runs_two_steps(config, tmp_path, tiny_subject, tiny_gold):
    cli = run_fit("--config", str(config), "--config", TINY, *TINY_OVERRIDES.get(config.stem, []), tmp_path=tmp_path)
    assert cli.trainer.global_step == 2
    saved = Path(cli.trainer.log_dir) / "model"
    weights = "adapter_model.safetensors" if cli.model.lora is not None else "model.safetensors"  # LoRA saves the adapter
    assert (saved / weights).exists() and (saved / "tokenizer.json").exists()
    assert (Path(cli.trainer.log_dir) / "config.yaml").exists()


def write_tofu_files(root: Path):
    """Small files in the published TOFU schema (JSON lines, .json extension)."""
    bench = FictitiousBenchmark("tiny")
    d = root / "data" / "TOFU"
    d.mkdir(parents=True)

    def dump(name, rows, keys):
        (d / name).write_text("\n".join(json.dumps({k: r[k] for k in keys}) for r in rows) + "\n")

    qa = ("question", "answer")
    perturbed = qa + ("paraphrased_answer", "perturbed_answer")
    dump("forget10.json", bench.records("forget10"), qa)
    dump("retain90.json", bench.records("retain90"), qa)
    dump("forget10_perturbed.json", bench.records("forget10"), perturbed)
    dump("retain_perturbed.json", bench.records("retain90")[:20], perturbed)
    dump("holdout10.json", bench.records("holdout"), qa)


def test_tofu_local_config_runs_on_files_in_the_tofu_schema(tmp_path, tiny_subject, monkeypatch):
    write_tofu_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    cli = run_fit("--config", str(ROOT / "configs/methods/npo.yaml"), "--config", str(ROOT / "configs/data/tofu_local.yaml"),
                  f"--model.init_args.model={tiny_subject}", tmp_path=tmp_path)
    assert cli.trainer.global_step == 2
    assert set(cli.model.summary["end"]) >= {"forget/nll", "retain/nll", "holdout/nll"}


def test_short_class_names_and_print_config(tmp_path, tiny_subject, capsys):
    cli = run_fit("--model", "GradDiff", f"--model.model={tiny_subject}", "--data", "FictitiousPeople",
                  "--data.preset", "tiny", tmp_path=tmp_path)
    assert type(cli.model).__name__ == "GradDiff" and cli.trainer.global_step == 2
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(ROOT / "configs/methods/npo.yaml"), "--print_config"])
    out = capsys.readouterr().out
    assert "class_path: lit_unlearn.NPO" in out and "beta: 0.1" in out


def test_tensorboard_events_hold_start_and_end_metrics(tmp_path, tiny_subject, tiny_gold):
    cli = run_fit("--config", str(ROOT / "configs/methods/grad_diff.yaml"), "--config", TINY,
                  "--trainer.log_every_n_steps=1", tmp_path=tmp_path)
    acc = EventAccumulator(cli.trainer.log_dir)
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in ("forget/fact_acc", "retain/fact_acc", "holdout/nll", "train/loss"):
        assert tag in tags, tags
    steps = [e.step for e in acc.Scalars("forget/fact_acc")]
    assert steps[0] == 0 and steps[-1] == 2
    start = acc.Scalars("forget/fact_acc")[0].value
    assert start == pytest.approx(cli.model.summary["start"]["forget/fact_acc"])


def test_failure_before_training_leaves_no_output(tmp_path, tiny_subject):
    with pytest.raises(ValueError, match="max_length=4 leaves no answer token"):
        run_fit("--config", str(ROOT / "configs/methods/npo.yaml"), "--config", TINY, "--data.init_args.max_length=4",
                tmp_path=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_missing_model_path_fails_before_anything_is_written(tmp_path):
    with pytest.raises(FileNotFoundError, match="Model path '/no/such/model' does not exist"):
        run_fit("--config", str(ROOT / "configs/methods/npo.yaml"), "--model.init_args.model=/no/such/model",
                tmp_path=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_console_script_and_module_entry_point(tmp_path):
    for cmd in (["lit-unlearn", "--help"], [sys.executable, "-m", "lit_unlearn", "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "fit" in out.stdout and "test" in out.stdout


def test_validate_and_test_subcommands(tmp_path, tiny_subject, capsys):
    common = ["--config", str(ROOT / "configs/methods/npo.yaml"), "--config", TINY,
              f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", "--trainer.enable_progress_bar=false"]
    cli = cli_main(["validate", *common])
    assert cli.trainer.callback_metrics["forget/fact_acc"] >= 0.95
    cli = cli_main(["test", *common])
    assert cli.model.summary["test"]["forget/fact_acc"] >= 0.95
    out = capsys.readouterr().out
    assert "lit-unlearn summary (test)" in out and "forget/fact_acc" in out


def test_testing_a_saved_model_shows_its_start_and_gold_columns(tmp_path, tiny_subject, tiny_gold, capsys):
    cli = run_fit("--config", str(ROOT / "configs/methods/grad_ascent.yaml"), "--config", TINY,
                  "--model.init_args.optimizer.init_args.lr=1e-3", tmp_path=tmp_path)
    saved = Path(cli.trainer.log_dir) / "model"
    capsys.readouterr()
    tested = cli_main(["test", "--config", str(ROOT / "configs/methods/grad_ascent.yaml"), "--config", TINY,
                       f"--model.init_args.model={saved}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
                       "--trainer.enable_progress_bar=false"])
    summary = tested.model.summary
    assert summary["start"] == cli.model.summary["start"] and summary["gold"] == cli.model.summary["gold"]
    assert summary["test"]["forget/nll"] == pytest.approx(cli.model.summary["end"]["forget/nll"], rel=1e-4)
    header = [l for l in capsys.readouterr().out.splitlines() if l.startswith("metric")][0]
    assert header.split() == ["metric", "start", "test", "gold", "retain"]
