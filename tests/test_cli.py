import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_unlearn import registry
from lit_unlearn.cli import cli_main
from lit_unlearn.datamodules.fictitious import FictitiousBenchmark
from tests.helpers import CONFIGS, TINY, lit_unlearn, method_config, tiny_cli_args
from tests.helpers.cli import TINY_OVERRIDES, cli_env, cli_fit, version_dir

METHOD_CONFIGS = sorted((CONFIGS / "methods").glob("*.yaml")) + [CONFIGS / "quickstart.yaml"]


def run_fit(*args, tmp_path):
    return cli_fit(*args, save_dir=tmp_path / "runs")


@pytest.mark.parametrize("config", METHOD_CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_runs_two_steps(config, tmp_path, tiny_subject, tiny_gold):
    cli = run_fit("--config", str(config), "--config", TINY, *TINY_OVERRIDES.get(config.stem, []), tmp_path=tmp_path)
    assert cli.trainer.global_step == (2 if type(cli.model).takes_optimizer_steps else 0)  # ModHiFi edits, no step
    saved = Path(cli.trainer.log_dir) / "model"
    # LoRA saves the adapter
    weights = "adapter_model.safetensors" if cli.model.lora is not None else "model.safetensors"
    assert (saved / weights).exists() and (saved / "tokenizer.json").exists()
    assert (Path(cli.trainer.log_dir) / "config.yaml").exists()
    assert set(cli.model.summary) >= {"start", "end", "gold"}  # every run gets RunSummary (gold: compare_with)


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
    cli = run_fit("--config", method_config("npo"), "--config", str(CONFIGS / "data/tofu_local.yaml"),
                  f"--model.init_args.model={tiny_subject}", "--model.init_args.compare_with=null", tmp_path=tmp_path)
    assert cli.trainer.global_step == 2
    assert set(cli.model.summary["end"]) >= {"forget/nll", "retain/nll", "holdout/nll"}
    assert cli.datamodule.batch_size == 8  # the method config's: a data config sets only data


def test_data_configs_read_files_from_data_dir_and_name_the_option_when_wrong(tmp_path, tiny_subject, monkeypatch):
    write_tofu_files(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    args = ["--config", method_config("npo"), "--config", str(CONFIGS / "data/tofu_local.yaml"),
            f"--model.init_args.model={tiny_subject}"]
    with pytest.raises(ValueError, match="compare_with.*embedded benchmark.*--model.init_args.compare_with"):
        run_fit(*args, f"--data.init_args.data_dir={tmp_path / 'elsewhere/data/TOFU'}", tmp_path=tmp_path)
    with pytest.raises(FileNotFoundError, match="data_dir.*not a directory"):
        run_fit(*args, "--model.init_args.compare_with=null", tmp_path=tmp_path)  # data/TOFU is not here
    (tmp_path / "elsewhere/data/TOFU/holdout10.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"eval_sets.holdout: .*holdout10.json.*does not exist.*data_dir"):
        run_fit(*args, "--model.init_args.compare_with=null",
                f"--data.init_args.data_dir={tmp_path / 'elsewhere/data/TOFU'}", tmp_path=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_short_class_names_and_print_config(tmp_path, tiny_subject, capsys):
    cli = run_fit("--model", "GradDiff", f"--model.model={tiny_subject}", "--data", "FictitiousPeople",
                  "--data.preset", "tiny", tmp_path=tmp_path)
    assert type(cli.model).__name__ == "GradDiff" and cli.trainer.global_step == 2
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", method_config("npo"), "--print_config"])
    out = capsys.readouterr().out
    assert "class_path: lit_unlearn.NPO" in out and "beta: 0.1" in out


def scalars(directory) -> EventAccumulator:
    events = EventAccumulator(str(directory))
    events.Reload()
    return events


def test_tensorboard_events_hold_start_and_end_metrics_one_run_per_set(tmp_path, tiny_subject, tiny_gold):
    cli = run_fit("--config", method_config("grad_diff"), "--config", TINY, "--trainer.log_every_n_steps=1",
                  tmp_path=tmp_path)
    log_dir = Path(cli.trainer.log_dir)
    assert "train/loss" in scalars(log_dir).Tags()["scalars"]
    assert not any(t.startswith(("forget/", "retain/", "eval/")) for t in scalars(log_dir).Tags()["scalars"])
    for name, tag in (("forget", "eval/fact_acc"), ("retain", "eval/fact_acc"), ("holdout", "eval/nll")):
        events = scalars(log_dir / name)  # each set is its own run; the set leaves the tag
        assert tag in events.Tags()["scalars"], (name, events.Tags()["scalars"])
        points = events.Scalars(tag)
        assert [points[0].step, points[-1].step] == [0, 2]
        for column, point in (("start", points[0]), ("end", points[-1])):
            assert point.value == pytest.approx(cli.model.summary[column][f"{name}/{tag.split('/')[1]}"]), column


def test_failure_before_training_leaves_no_output(tmp_path, tiny_subject):
    with pytest.raises(ValueError, match="max_length=4 leaves no answer token"):
        run_fit("--config", method_config("npo"), "--config", TINY, "--data.init_args.max_length=4", tmp_path=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_missing_model_path_fails_before_anything_is_written(tmp_path):
    with pytest.raises(FileNotFoundError, match="Model path '/no/such/model' does not exist"):
        run_fit("--config", method_config("npo"), "--model.init_args.model=/no/such/model", tmp_path=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_console_script_and_module_entry_point(tmp_path):
    for out in (lit_unlearn(["--help"], cwd=tmp_path, timeout=120),
                subprocess.run([sys.executable, "-m", "lit_unlearn", "--help"], capture_output=True, text=True,
                               timeout=120, cwd=tmp_path, env=cli_env())):
        assert out.returncode == 0, out.stderr
        assert "fit" in out.stdout and "test" in out.stdout


def test_validate_and_test_subcommands(tmp_path, tiny_subject, capsys):
    common = ["--config", method_config("npo"), "--config", TINY,
              f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", "--trainer.enable_progress_bar=false"]
    cli = cli_main(["validate", *common])
    assert cli.trainer.callback_metrics["forget/fact_acc"] >= 0.95
    cli = cli_main(["test", *common])
    assert cli.model.summary["test"]["forget/fact_acc"] >= 0.95
    out = capsys.readouterr().out
    assert "lit-unlearn summary (test)" in out and "forget/fact_acc" in out


def test_default_root_dir_holds_logs_checkpoints_and_the_saved_model(tmp_path, tiny_subject, tiny_gold):
    """One flag moves every output of a shipped config (its logger's relative save_dir included)."""
    (tmp_path / "work").mkdir()
    root = tmp_path / "out"
    lit_unlearn(tiny_cli_args("npo", f"--trainer.default_root_dir={root}", "--summary.gold=false", steps=2),
                cwd=tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []  # nothing in the working directory
    version = version_dir(root / "runs", "npo")  # configs/methods/npo.yaml logs to runs/npo
    assert (version / "config.yaml").is_file() and (version / "run_info.json").is_file()
    assert list(version.glob("events.out.tfevents.*")) and (version / "forget").is_dir()
    assert (version / "checkpoints" / "last.ckpt").is_file()
    assert (version / "model" / "model.safetensors").is_file() and (version / "model" / "tokenizer.json").is_file()
    assert {p.name for p in root.iterdir()} == {"runs"}


def test_methods_and_callbacks_list_every_registered_name(tmp_path):
    methods = lit_unlearn(["methods"], cwd=tmp_path).stdout.splitlines()
    rows = [line.split("`")[1] for line in methods if line.startswith("| `")]  # | `NPO` | objective | ...
    assert rows == list(registry.methods()) and len(rows) >= 10
    callbacks = lit_unlearn(["callbacks"], cwd=tmp_path).stdout.splitlines()
    assert [line.split()[0] for line in callbacks if line.strip()] == list(registry.callbacks())
    assert {"SavePretrained", "RunSummary", "DivergenceGuard"} <= set(registry.callbacks())
    assert list(tmp_path.iterdir()) == []
