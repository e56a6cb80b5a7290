"""``lit-unlearn fit`` survives a crash: SIGKILL mid-fit then ``--ckpt_path last`` equals an
uninterrupted run; the same config and seed give the same weights and a record of the run."""

import json
import signal
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from lit_unlearn import FictitiousPeople
from tests.helpers.cli import lit_unlearn, start_lit_unlearn, version_dir


def resume_config(tmp_path: Path, tiny_subject: str) -> Path:
    """NPO (cached reference log-probs) with two stateful callbacks, evaluated and
    checkpointed every 2 steps; logs under ``runs/resume``."""
    config = {
        "seed_everything": 0,
        "model": {"class_path": "NPO", "init_args": {
            "model": tiny_subject, "compare_with": None, "beta": 0.1, "retain_weight": 1.0,
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}}}},
        "data": {"class_path": "FictitiousPeople", "init_args": {"preset": "tiny", "batch_size": 3}},
        "trainer": {
            "max_steps": 40, "val_check_interval": 2, "check_val_every_n_epoch": None, "log_every_n_steps": 1,
            "enable_progress_bar": False, "accelerator": "cpu",
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": "runs", "name": "resume"}},
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"filename": "{step}", "save_top_k": -1, "save_last": True}},
                {"class_path": "lit_unlearn.DualVariable", "init_args": {"epsilon": 0.05, "step_size": 5.0}},
                {"class_path": "lit_unlearn.StabilityGap", "init_args": {"every_n_steps": 3, "subset_size": 4}},
            ],
        },
    }
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def final_state(run_dir: Path) -> dict:
    version = version_dir(run_dir / "runs", "resume")
    ckpt = torch.load(version / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {
        "weights": load_file(version / "model" / "model.safetensors"),
        "summary": json.loads((version / "model" / "lit_unlearn_summary.json").read_text()),
        "history": ckpt["lit_unlearn"]["eval_history"],
        "ref_logps": ckpt["lit_unlearn"]["ref_logps"],
        "callbacks": {k.split("{")[0]: v for k, v in ckpt["callbacks"].items() if not k.startswith("ModelCheckpoint")},
        "global_step": ckpt["global_step"],
    }


def test_sigkill_mid_fit_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_subject):
    config = resume_config(tmp_path, tiny_subject)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    lit_unlearn(["fit", "--config", str(config)], cwd=straight)

    proc = start_lit_unlearn(["fit", "--config", str(config)], cwd=killed)
    checkpoints = version_dir(killed / "runs", "resume") / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(int(p.stem.split("=")[1]) >= 10 for p in checkpoints.glob("step=*.ckpt")):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (checkpoints.parent / "model").exists()  # it really died mid-fit
    stopped_at = max(int(p.stem.split("=")[1]) for p in checkpoints.glob("step=*.ckpt"))
    assert 10 <= stopped_at < 40

    lit_unlearn(["fit", "--config", str(config), "--ckpt_path", "last"], cwd=killed)
    assert not version_dir(killed / "runs", "resume", version=1).exists()  # continued in the killed run's directory

    a, b = final_state(straight), final_state(killed)
    assert a["global_step"] == b["global_step"] == 40
    assert a["weights"].keys() == b["weights"].keys()
    for key, value in a["weights"].items():
        assert torch.equal(value, b["weights"][key]), key
    assert a["summary"] == b["summary"] and set(a["summary"]) >= {"start", "end"}
    assert a["history"] == b["history"]
    assert torch.equal(a["ref_logps"], b["ref_logps"])
    assert a["callbacks"] == b["callbacks"]  # DualVariable's λ and StabilityGap's history
    assert set(a["callbacks"]) == {"DualVariable", "StabilityGap"}


def test_same_config_and_seed_give_the_same_weights_and_a_run_record(tiny_subject, tmp_path):
    config = resume_config(tmp_path, tiny_subject)
    weights = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        lit_unlearn(["fit", "--config", str(config), "--trainer.max_steps=6"], cwd=tmp_path / name)
        weights.append(load_file(version_dir(tmp_path / name / "runs", "resume") / "model" / "model.safetensors"))
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    version = version_dir(tmp_path / "one" / "runs", "resume")
    info = json.loads((version / "run_info.json").read_text())
    assert info["versions"]["torch"] in (torch.__version__.split("+")[0], torch.__version__)
    assert info["versions"]["lit-unlearn"] and info["versions"]["lightning"] and info["versions"]["transformers"]
    assert info["seed"] == "0" and info["method"] == "NPO" and info["hyperparameters"]["beta"] == 0.1
    assert len(info["data"]["sha256"]["forget"]) == 64 and info["data"]["sha256"]["all"]
    assert (version / "config.yaml").is_file()  # the resolved config (LightningCLI)
    assert json.loads((version / "model" / "run_info.json").read_text())["data"] == info["data"]
    other = json.loads((version_dir(tmp_path / "two" / "runs", "resume") / "run_info.json").read_text())
    assert other["data"]["sha256"] == info["data"]["sha256"]


def test_data_fingerprint_is_stable_and_changes_with_the_data():
    """The data hashes ``run_info.json`` records."""
    def fingerprint(**kwargs):
        data = FictitiousPeople("tiny", **kwargs)
        data.setup("fit")
        return data.fingerprint()

    base = fingerprint(split="forget10")
    assert fingerprint(split="forget10") == base
    other = fingerprint(split="forget05")
    assert other["forget"] != base["forget"] and other["all"] != base["all"]
    truncated = fingerprint(split="forget10", max_length=24)  # the same records, tokenised differently
    assert truncated["forget"] != base["forget"]
