"""TradeOffCurves with the other dynamics callbacks, read back from TensorBoard files and a live server."""

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_unlearn.cli import cli_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_subject, tiny_gold):
    tmp = tmp_path_factory.mktemp("tradeoff")
    cli = cli_main(["fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--config",
                    str(ROOT / "configs/data/fictitious_tiny.yaml"), "--trainer.max_epochs=4",
                    "--trainer.check_val_every_n_epoch=2", "--trainer.log_every_n_steps=1",
                    "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={tmp}"])
    return Path(cli.trainer.log_dir), cli


def test_png_csv_and_event_files(run_dir):
    log_dir, cli = run_dir
    names = {type(c).__name__ for c in cli.trainer.callbacks}
    assert {"TradeOffCurves", "StabilityGap", "RelearningProbe"} <= names  # the quickstart uses all three
    png, csv_text = log_dir / "tradeoff.png", (log_dir / "tradeoff.csv").read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, *rows = csv_text.strip().splitlines()
    assert header.startswith("step,") and "forget/fact_acc" in header and "retain/fact_acc" in header
    assert [int(r.split(",")[0]) for r in rows] == [h["step"] for h in cli.model.eval_history]
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("forget/fact_acc", "retain/fact_acc", "stability/gap", "stability/retain_acc", "relearn/recovery",
                "hp/forget_fact_acc"):
        assert tag in tags["scalars"], tag
    assert "lit-unlearn/tradeoff" in tags["images"]
    layout = [t for t in tags["tensors"] if "custom_scalars" in t]
    assert layout  # the custom-scalars layout was written
    final = acc.Scalars("forget/fact_acc")[-1]
    assert final.value == pytest.approx(cli.model.summary["end"]["forget/fact_acc"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_a_real_tensorboard_server_serves_the_curves_and_layout(run_dir):
    log_dir, cli = run_dir
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir), "--port", str(port),
                               "--host", "127.0.0.1", "--load_fast", "false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                runs = get(f"{base}/data/runs")
                tags = get(f"{base}/data/plugin/scalars/tags")
                if runs and any("forget/fact_acc" in t for t in tags.values()):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise TimeoutError("tensorboard did not serve the run in 90 s")
            time.sleep(1)
        run = next(r for r, t in tags.items() if "forget/fact_acc" in t)
        for tag in ("forget/fact_acc", "retain/fact_acc"):
            query = urllib.parse.urlencode({"run": run, "tag": tag})
            points = get(f"{base}/data/plugin/scalars/scalars?{query}")
            steps = [p[1] for p in points]
            assert steps[0] == 0 and steps[-1] == cli.trainer.global_step
            assert points[-1][2] == pytest.approx(cli.model.summary["end"][tag], rel=1e-5)
        layout = get(f"{base}/data/plugin/custom_scalars/layout")
        titles = [c["title"] for c in layout["category"]]
        assert "lit-unlearn: forget vs retain" in titles
        charts = {ch["title"]: ch for c in layout["category"] for ch in c["chart"]}
        assert "fact accuracy" in charts
    finally:
        server.terminate()
        server.wait(timeout=30)
