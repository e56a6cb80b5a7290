"""Issue 9: kill-and-resume, DivergenceGuard, safe loading, reproducibility."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file

from lit_unlearn import DivergenceGuard, FictitiousPeople, GradAscent, GradDiff, NPO

ROOT = Path(__file__).resolve().parents[1]


def resume_config(tmp_path: Path, tiny_subject: str) -> Path:
    """NPO (cached reference log-probs) with two stateful callbacks, evaluated and
    checkpointed every 2 steps."""
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


def fit_command(config: Path, extra=()):
    return [sys.executable, "-m", "lit_unlearn.cli", "fit", "--config", str(config), *extra]


def final_state(run_dir: Path) -> dict:
    version = run_dir / "runs" / "resume" / "version_0"
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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    config = resume_config(tmp_path, tiny_subject)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    out = subprocess.run(fit_command(config), cwd=straight, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]

    proc = subprocess.Popen(fit_command(config), cwd=killed, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoints = killed / "runs" / "resume" / "version_0" / "checkpoints"
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

    out = subprocess.run(fit_command(config, ["--ckpt_path", "last"]), cwd=killed, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (killed / "runs" / "resume" / "version_1").exists()  # continued in the killed run's directory

    a, b = final_state(straight), final_state(killed)
    assert a["global_step"] == b["global_step"] == 40
    assert a["weights"].keys() == b["weights"].keys()
    for key, value in a["weights"].items():
        assert torch.equal(value, b["weights"][key]), key
    assert a["summary"] == b["summary"]
    assert a["history"] == b["history"]
    assert torch.equal(a["ref_logps"], b["ref_logps"])
    assert a["callbacks"] == b["callbacks"]  # DualVariable's λ and StabilityGap's history
    assert set(a["callbacks"]) == {"DualVariable", "StabilityGap"}


def test_checkpoints_hold_no_reference_weights_and_load_weights_only(tiny_subject, tmp_path):
    """UNDIAL keeps a frozen reference copy: it stays out of the checkpoint, which loads with
    weights_only=True (nothing but tensors and plain containers)."""
    from lit_unlearn import UNDIAL

    module = UNDIAL(model=tiny_subject, optimizer=partial(torch.optim.AdamW, lr=1e-3), save_model=False)
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=2)
    Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[ckpt],
            limit_val_batches=0).fit(module, datamodule=FictitiousPeople("tiny", batch_size=4, eval_sets=["forget"]))
    state = torch.load(tmp_path / "step=2.ckpt", map_location="cpu", weights_only=True)
    n_model = len(module.model.state_dict())
    assert len(state["state_dict"]) == n_model  # the reference copy is not there
    assert all(k.startswith("model.") for k in state["state_dict"])


def test_a_pickled_object_in_a_checkpoint_is_refused(tiny_subject, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, bad)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "GradAscent", "init_args": {"model": tiny_subject}},
                                      "data": {"class_path": "FictitiousPeople", "init_args": {"preset": "tiny"}},
                                      "trainer": {"max_steps": 1, "logger": False}}))
    from lit_unlearn.cli import cli_main

    with pytest.raises(Exception, match="[Ww]eights.only|WeightsUnpickler|Unsupported global"):
        cli_main(["fit", "--config", str(config), "--ckpt_path", str(bad)])
    assert not (tmp_path / "pwned").exists()


class FirstBad(Callback):
    """Records the step at which the loss or a gradient is first non-finite (before any guard acts)."""

    def __init__(self):
        self.step, self.losses = None, []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.losses.append(float(module.last_loss))
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        finite = math.isfinite(self.losses[-1]) and all(bool(torch.isfinite(g).all()) for g in grads)
        if self.step is None and not finite:
            self.step = trainer.global_step + 1


@pytest.mark.parametrize("action", ["stop", "rollback"])
def test_planted_nan_is_caught_within_one_step_and_the_saved_model_is_the_last_good_checkpoint(action, tiny_subject,
                                                                                                tmp_path):
    seed_everything(0)
    module = GradAscent(model=tiny_subject, optimizer=partial(torch.optim.AdamW, lr=1e6), evaluate_at_start=False,
                        save_dir=str(tmp_path / "model"))
    first, guard = FirstBad(), DivergenceGuard(action=action)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=1, save_top_k=-1)
    trainer = Trainer(max_steps=20, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, callbacks=[first, guard, ckpt], default_root_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="DivergenceGuard stopped the run at step"):
        trainer.fit(module, datamodule=FictitiousPeople("tiny", batch_size=4, eval_sets=["forget"]))
    assert first.step is not None  # the planted divergence happened
    assert guard.tripped["step"] == first.step  # caught at the step it appeared
    assert trainer.global_step <= first.step  # and training stopped there
    saved = load_file(tmp_path / "model" / "model.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in saved.values())
    good = torch.load(tmp_path / "ckpt" / f"step={first.step - 1}.ckpt", map_location="cpu", weights_only=True)
    for key, value in saved.items():
        assert torch.equal(value, good["state_dict"]["model." + key]), key
    if action == "rollback":
        assert guard.tripped["restored"].endswith(f"step={first.step - 1}.ckpt")


def test_retain_floor_stops_and_restores_the_last_passing_weights(tiny_subject, tmp_path):
    """GradAscent at a high learning rate destroys retain accuracy; the floor catches it and
    the weights go back to those of the last evaluation above the floor."""
    seed_everything(0)
    module = GradAscent(model=tiny_subject, optimizer=partial(torch.optim.AdamW, lr=3e-3), save_model=False)

    class Snapshots(Callback):
        def __init__(self):
            self.at = {}

        def on_validation_end(self, trainer, pl_module):
            self.at[trainer.global_step] = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    snaps, guard = Snapshots(), DivergenceGuard(floors={"retain/fact_acc": 0.9})
    trainer = Trainer(max_steps=40, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, val_check_interval=1, check_val_every_n_epoch=None,
                      callbacks=[guard, snaps])
    with pytest.warns(RuntimeWarning, match="fell below its floor 0.9"):
        trainer.fit(module, datamodule=FictitiousPeople("tiny", batch_size=4, eval_sets=["retain"]))
    bad_step = guard.tripped["step"]
    assert 1 <= guard.good_step < bad_step < 40
    history = {h["step"]: h["retain/fact_acc"] for h in module.eval_history}
    assert history[bad_step] < 0.9 <= history[guard.good_step]
    for name, p in module.named_parameters():
        assert torch.equal(p.detach(), snaps.at[guard.good_step][name]), name


def test_same_config_and_seed_give_the_same_weights_and_a_run_record(tiny_subject, tmp_path):
    config = resume_config(tmp_path, tiny_subject)
    weights = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        out = subprocess.run(fit_command(config, ["--trainer.max_steps=6"]), cwd=tmp_path / name, capture_output=True,
                             text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr[-3000:]
        weights.append(load_file(tmp_path / name / "runs/resume/version_0/model/model.safetensors"))
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    version = tmp_path / "one" / "runs/resume/version_0"
    info = json.loads((version / "run_info.json").read_text())
    assert info["versions"]["torch"] == torch.__version__.split("+")[0] or info["versions"]["torch"] == torch.__version__
    assert info["versions"]["lit-unlearn"] and info["versions"]["lightning"] and info["versions"]["transformers"]
    assert info["seed"] == "0" and info["method"] == "NPO" and info["hyperparameters"]["beta"] == 0.1
    assert len(info["data"]["sha256"]["forget"]) == 64 and info["data"]["sha256"]["all"]
    assert (version / "config.yaml").is_file()  # the resolved config (LightningCLI)
    assert json.loads((version / "model" / "run_info.json").read_text())["data"] == info["data"]
    other = json.loads((tmp_path / "two" / "runs/resume/version_0/run_info.json").read_text())
    assert other["data"]["sha256"] == info["data"]["sha256"]


def test_data_fingerprint_is_stable_and_changes_with_the_data():
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


def test_remote_code_in_a_checkpoint_does_not_run_by_default(tmp_path, random_model_dir):
    """A model directory that ships Python code (auto_map) is refused unless trust_remote_code."""
    import shutil

    from lit_unlearn.models import load_causal_lm

    model = tmp_path / "remote"
    shutil.copytree(random_model_dir, model)
    marker = tmp_path / "code_ran"
    (model / "configuration_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig\nclass EvilConfig(LlamaConfig):\n    model_type = 'evil'\n")
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_causal_lm(str(model))
    assert not marker.exists()


def test_a_crash_while_saving_leaves_no_half_written_model(tiny_subject, tmp_path, monkeypatch):
    module = GradDiff(model=tiny_subject, optimizer=partial(torch.optim.AdamW, lr=1e-3), evaluate_at_start=False,
                      save_dir=str(tmp_path / "model"))
    trainer = Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, limit_val_batches=0)

    def disk_full(*args, **kwargs):  # the model weights are written, then the tokenizer fails
        raise OSError("No space left on device")

    monkeypatch.setattr(type(module.tokenizer), "save_pretrained", disk_full)
    with pytest.raises(OSError, match="No space left"):
        trainer.fit(module, datamodule=FictitiousPeople("tiny", batch_size=4, eval_sets=["forget"]))
    assert list(tmp_path.iterdir()) == []  # neither the model directory nor its temporary sibling


def test_a_nan_metric_fails_its_floor_and_an_unknown_floor_is_named(tiny_subject, tmp_path):
    guard = DivergenceGuard(floors={"retain/fact_acc": 0.5, "retian/fact_acc": 0.5})
    module = GradDiff(model=tiny_subject, optimizer=partial(torch.optim.AdamW, lr=1e-4), save_model=False)
    compute = module._compute

    def nan_from_step_2(names):  # the evaluation itself returns NaN (a collapsed model)
        results = compute(names)
        if module.global_step >= 2:
            results["retain/fact_acc"] = float("nan")
        return results

    module._compute = nan_from_step_2
    trainer = Trainer(max_steps=6, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, val_check_interval=1, check_val_every_n_epoch=None, callbacks=[guard])
    with pytest.warns(UserWarning) as record:
        trainer.fit(module, datamodule=FictitiousPeople("tiny", batch_size=4, eval_sets=["retain"]))
    messages = [str(w.message) for w in record]
    assert any("['retian/fact_acc'] name no evaluated metric" in m for m in messages), messages
    assert any("DivergenceGuard stopped the run at step 2" in m for m in messages), messages
    assert guard.tripped["step"] == 2 and "nan" in guard.tripped["reason"] and guard.good_step == 1
