"""TradeOffCurves and the TensorBoard layout of a run, read back from event files and a live server.

The quickstart (StabilityGap, RelearningProbe, TradeOffCurves) on the tiny preset: each evaluation
set is its own run, so ``eval/fact_acc`` is one chart with a line per set; the custom layout has
only charts with data; final metrics live in the HPARAMS tab, not in ``hp/`` scalar cards."""

import json
import re
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
from tests.helpers import CONFIGS, TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_subject, tiny_gold):
    tmp = tmp_path_factory.mktemp("tradeoff")
    cli = cli_main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", TINY, "--trainer.max_epochs=4",
                    "--trainer.check_val_every_n_epoch=2", "--trainer.log_every_n_steps=1",
                    "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp}"])
    return Path(cli.trainer.log_dir), cli


def scalars(path: Path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_png_csv_and_event_files(run_dir):
    log_dir, cli = run_dir
    names = {type(c).__name__ for c in cli.trainer.callbacks}
    assert {"TradeOffCurves", "StabilityGap", "RelearningProbe", "RunSummary", "SavePretrained"} <= names
    png, csv_text = log_dir / "tradeoff.png", (log_dir / "tradeoff.csv").read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, *rows = csv_text.strip().splitlines()
    assert header.startswith("step,") and "forget/fact_acc" in header and "retain/fact_acc" in header
    assert [int(r.split(",")[0]) for r in rows] == [h["step"] for h in cli.model.eval_history]
    main = scalars(log_dir)
    tags = main.Tags()
    for tag in ("train/loss", "stability/gap", "stability/min_acc", "relearn/recovery"):
        assert tag in tags["scalars"], tag
    assert not [t for t in tags["scalars"] if t.startswith("hp/") or t.startswith("forget/")]
    assert "lit-unlearn/tradeoff" in tags["images"]
    assert [t for t in tags["tensors"] if "custom_scalars" in t]  # the layout
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(main.PluginTagToContent("hparams"))
    for name in ("forget", "retain", "holdout", "neighbor"):  # one run per evaluation set, the same tags
        run = scalars(log_dir / name)
        assert "eval/fact_acc" in run.Tags()["scalars"], name
        final = run.Scalars("eval/fact_acc")[-1]
        assert final.step == cli.trainer.global_step
        assert final.value == pytest.approx(cli.model.summary["end"][f"{name}/fact_acc"])
    assert "stability/acc" in scalars(log_dir / "retain").Tags()["scalars"]
    assert "stability/acc" not in scalars(log_dir / "holdout").Tags()["scalars"]  # StabilityGap tracks 3 sets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(run_dir):
    log_dir, _ = run_dir
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir.parent), "--port",
                             str(port), "--host", "127.0.0.1", "--load_fast", "false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                tags = get(f"{base}/data/plugin/scalars/tags")
                if sum("eval/fact_acc" in t for t in tags.values()) >= 4:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise TimeoutError("tensorboard did not serve the runs in 90 s")
            time.sleep(1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_forget_and_retain_are_separate_runs_of_the_same_tag(server, run_dir):
    log_dir, cli = run_dir
    tags = get(f"{server}/data/plugin/scalars/tags")
    version = log_dir.name
    assert "eval/fact_acc" in tags[f"{version}/forget"] and "eval/fact_acc" in tags[f"{version}/retain"]
    assert not any(t.startswith(("hp/", "forget/", "retain/")) for run in tags.values() for t in run)
    for name in ("forget", "retain"):
        query = urllib.parse.urlencode({"run": f"{version}/{name}", "tag": "eval/fact_acc"})
        points = get(f"{server}/data/plugin/scalars/scalars?{query}")
        assert [p[1] for p in points][0] == 0 and points[-1][1] == cli.trainer.global_step
        assert points[-1][2] == pytest.approx(cli.model.summary["end"][f"{name}/fact_acc"], rel=1e-5)
    assert points[0][2] == pytest.approx(1.0)  # the subject model knows every retain fact at step 0


def test_the_layout_shows_only_charts_with_data(server):
    tags = get(f"{server}/data/plugin/scalars/tags")
    served = {t for run in tags.values() for t in run}
    layout = get(f"{server}/data/plugin/custom_scalars/layout")
    charts = {ch["title"]: ch["multiline"]["tag"] for c in layout["category"] for ch in c["chart"]}
    assert any(r == ["^eval/fact_acc$"] for r in charts.values())
    # one tag per chart: every line is a run (a set) in its own colour, named in the legend
    assert all(len(r) == 1 and r[0].startswith("^") and r[0].endswith("$") for r in charts.values())
    for title, regexes in charts.items():
        assert any(re.search(r, t) for r in regexes for t in served), f"chart {title!r} has no data"
    assert not any("suite" in title for title in charts)  # no SuiteEvaluation in the quickstart


def test_final_metrics_are_hparams_columns_of_the_set_runs(server, run_dir):
    log_dir, _ = run_dir
    experiment = get(f"{server}/data/plugin/hparams/experiment", {"experimentName": ""})
    metrics = {(m["name"].get("group", ""), m["name"]["tag"]) for m in experiment["metricInfos"]}
    assert {("forget", "eval/fact_acc"), ("retain", "eval/fact_acc"), ("", "relearn/recovery")} <= metrics
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert "beta" in names and not any(n.startswith("_") for n in names)  # no CLI bookkeeping (_class_path)


def test_hparams_metric_values_are_the_final_points(server, run_dir):
    log_dir, cli = run_dir
    request = {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN"], "colParams": [],
               "startIndex": 0, "sliceSize": 10, "includeMetrics": True}
    groups = get(f"{server}/data/plugin/hparams/session_groups", request)["sessionGroups"]
    (session,) = [s for g in groups for s in g["sessions"] if s["name"].endswith(log_dir.name)]
    values = {(v["name"].get("group", ""), v["name"]["tag"]): v["value"] for v in session["metricValues"]}
    assert values[("forget", "eval/fact_acc")] == pytest.approx(cli.model.summary["end"]["forget/fact_acc"], rel=1e-5)
    assert values[("retain", "eval/nll")] == pytest.approx(cli.model.summary["end"]["retain/nll"], rel=1e-5)
