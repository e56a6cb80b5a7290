"""Relearning attack after unlearning: how much forgotten knowledge comes back?

Runs shipped method configs on the embedded benchmark (small preset, forget10) with a
``RelearningProbe`` at the end: relearn half of the forget set for ``--steps`` steps and
measure fact accuracy on the other half. Recovery = (relearned - unlearned) /
(start - unlearned). The last row relearns on the gold retain model, which never knew the
forget people: what relearning half of the facts teaches about the other half by itself.

    python benchmarks/relearning.py [--steps 20] [--lr 1e-3] [--configs grad_ascent grad_diff npo]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

from lit_unlearn.callbacks import RelearningProbe
from lit_unlearn.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["grad_ascent", "grad_diff", "npo", "quickstart"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        probe_cfg = Path(tmp) / "probe.yaml"
        probe_cfg.write_text(f"""trainer:
  callbacks:
    - class_path: lit_unlearn.RelearningProbe
      init_args: {{at_end: true, relearn_set: forget, relearn_fraction: 0.5, steps: {args.steps}, lr: {args.lr}}}
""")
        # control: the gold retain model, which never saw the forget people (lr 0: not unlearned)
        control = ["--model.init_args.model=builtin:small/retain90", "--model.init_args.optimizer.init_args.lr=0.0",
                   "--trainer.max_epochs=1"]
        for name in args.configs + ["gold retain (control)"]:
            stem = "grad_ascent" if name.startswith("gold") else name
            path = ROOT / "configs" / ("quickstart.yaml" if stem == "quickstart" else f"methods/{stem}.yaml")
            extra = control if name.startswith("gold") else []
            cli = cli_main(["fit", "--config", str(path), "--config", str(probe_cfg),
                            "--trainer.enable_progress_bar=false",
                            "--trainer.enable_model_summary=false", f"--trainer.logger.init_args.save_dir={tmp}/runs",
                            "--save_pretrained.enabled=false", *extra])
            probe = next(c for c in cli.trainer.callbacks if isinstance(c, RelearningProbe))
            h = probe.history[-1]
            end = cli.model.summary["end"]
            rows.append((name, type(cli.model).__name__, end["forget/fact_acc"], end["retain/fact_acc"],
                         probe.start_value, h["unlearned"], h["relearned"], h["recovery"]))
    print(f"\nRelearning probe: {args.steps} AdamW steps at lr {args.lr} on half of forget10 (small preset); "
          "fact accuracy on the other half")
    print(f"{'config':<24}{'method':<12}{'forget':>8}{'retain':>8}{'start':>8}{'unlearned':>11}{'relearned':>11}"
          f"{'recovery':>10}")
    for name, method, forget, retain, start, unl, rel, rec in rows:
        print(f"{name:<24}{method:<12}{forget:>8.3f}{retain:>8.3f}{start:>8.3f}{unl:>11.3f}{rel:>11.3f}{rec:>10.3f}")


if __name__ == "__main__":
    main()
