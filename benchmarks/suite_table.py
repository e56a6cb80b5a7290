"""Shared by the suite tables (code leakage, DUSK, BLUR): one fit of a config with its suite run
before and after by ``SuiteEvaluation``, the gold model's suite metrics, and a start -> end table."""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from rwku_table import Clock  # the script's folder is on sys.path

from lit_unlearn.callbacks import SuiteEvaluation
from lit_unlearn.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]


def table_args(doc: str, folder: str, default: list[str], data_prefix: str) -> tuple[argparse.Namespace, list[Path],
                                                                                         list[str]]:
    """The suite tables' command line: ``--configs`` (names in ``configs/<folder>/`` or paths), ``--preset``
    (``tiny`` layers ``configs/data/<data_prefix>_tiny.yaml``), ``--steps``, ``--out``. Returns the
    arguments, the config paths and the data-config arguments; quiets Lightning."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=default, help=f"names in configs/{folder}/ or .yaml paths")
    parser.add_argument("--preset", default=None, choices=["tiny", "small"],
                        help=f"data preset (default the configs': small); tiny layers "
                             f"configs/data/{data_prefix}_tiny.yaml")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of every config (default: its own)")
    parser.add_argument("--out", default=f"{data_prefix}_table.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    configs = [Path(c) if c.endswith(".yaml") else ROOT / "configs" / folder / f"{c}.yaml" for c in args.configs]
    data = ["--config", str(ROOT / "configs" / "data" / f"{data_prefix}_{args.preset}.yaml")] if args.preset else []
    return args, configs, data


def run(config: Path, root: Path, extra: list[str], start: dict | None, steps: int | None) -> dict:
    """One fit of ``config`` (plus ``extra`` arguments, e.g. a data config) through the CLI parser, in
    this process; ``start`` (the start model's suite metrics) skips measuring them again. The config
    must add ``SuiteEvaluation`` (the data and eval configs of the suite tables do)."""
    args = ["--config", str(config), *extra, "--trainer.default_root_dir", str(root),
            "--trainer.logger.init_args.save_dir", str(root), "--trainer.enable_progress_bar", "false",
            "--summary.verbose", "false", "--save_pretrained.enabled", "false"]
    if steps is not None:
        args += ["--trainer.max_steps", str(steps)]
    cli = cli_main(args, run=False)
    suites = [c for c in cli.trainer.callbacks if isinstance(c, SuiteEvaluation)]
    if not suites:
        raise ValueError(f"{config}: no SuiteEvaluation callback; layer the suite's eval config after it")
    suite = suites[0]
    suite.at_start = start is None
    cli.model.suite.progress = False
    clock = Clock()
    cli.trainer.callbacks.append(clock)
    started = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wall = time.perf_counter() - started
    return {"config": config.stem, "method": type(cli.model).__name__, "start": start or suite.history[0],
            "end": suite.history[-1], "steps": cli.trainer.global_step, "wall_s": wall,
            "ms_per_step": 1000 * clock.step_time / max(1, clock.steps), "gold_model": cli.datamodule.gold_model,
            "generations": suite.last_result.generations if suite.last_result is not None else {},
            "cli": cli}


def gold_metrics(row: dict) -> dict:
    """The suite on the gold model, with the first run's datamodule and suite."""
    from lit_unlearn.models import load_causal_lm, resolve_model_path

    cli = row["cli"]
    model = load_causal_lm(resolve_model_path(row["gold_model"]))
    return cli.model.suite.run(model, cli.datamodule.tokenizer, cli.datamodule, "val").metrics


def table(rows: list[dict], gold: dict | None, columns: list[tuple[str, str]]) -> str:
    """Markdown: one row per run, ``start -> end`` per ``(title, metric)`` column, and the gold row."""
    head = "| config | method | " + " | ".join(c for c, _ in columns) + " | steps | wall s |"
    lines = [head, "|" + "---|" * (len(columns) + 4)]
    nan = float("nan")
    for r in rows:
        s, e = r["start"], r["end"]
        cells = " | ".join(f"{s.get(k, nan):.2f} -> {e.get(k, nan):.2f}" for _, k in columns)
        lines.append(f"| {r['config']} | {r['method']} | {cells} | {r['steps']} | {r['wall_s']:.0f} |")
    if gold is not None:
        lines.append("| gold | retain only | " + " | ".join(f"{gold.get(k, nan):.2f}" for _, k in columns) + " | | |")
    return "\n".join(lines)


def run_configs(configs: list[Path], extra: Callable[[Path], list[str]], steps: int | None, out: str,
                columns: list[tuple[str, str]]) -> tuple[list[dict], dict]:
    """Fit each config (plus ``extra(config)`` arguments) from the same start model, printing each row as
    it lands; the gold model's suite metrics from the first run's data; everything but the CLI
    objects written to ``out`` as JSON. Returns the rows and the gold metrics."""
    rows, gold = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            print(f"== {config.stem}", flush=True)
            rows.append(run(config, Path(tmp) / config.stem, extra(config), rows[0]["start"] if rows else None, steps))
            if gold is None:
                gold = gold_metrics(rows[0])
            print(table(rows[-1:], None, columns), flush=True)
    kept = [{k: v for k, v in r.items() if k != "cli"} for r in rows]
    Path(out).write_text(json.dumps({"gold": gold, "rows": kept}, indent=1))
    return rows, gold
