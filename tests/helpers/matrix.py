"""Every shipped method recipe x every general callback, 2 steps on the tiny preset.

Each pair either trains 2 optimizer steps with finite losses ("trains"), or is refused before
the first step with a ValueError that names both the callback and the method ("refused");
anything else ("CRASH: ...") is a defect. ``python -m tests.helpers.matrix`` prints the table.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lit_unlearn import (
    DataAttributionWeights,
    DivergenceGuard,
    DualVariable,
    GradientProjection,
    NullSpaceProjection,
    RelearningProbe,
    StabilityGap,
    SuiteEvaluation,
    TOFUSuite,
    TradeOffCurves,
    registry,
)
from lit_unlearn.cli import cli_main
from tests.helpers.cli import TINY, TINY_OVERRIDES
from tests.helpers.training import Recorder

# One or two settings per general callback, cheap enough for the tiny preset.
CALLBACKS: dict[str, Callable[[], object]] = {
    "GradientProjection": lambda: GradientProjection(k=2),
    "DualVariable(epsilon)": lambda: DualVariable(epsilon=1.0),
    "DualVariable(tolerance)": lambda: DualVariable(tolerance=0.5, measure_examples=16),
    "DataAttributionWeights": lambda: DataAttributionWeights(retain_examples=16),
    "RelearningProbe": lambda: RelearningProbe(steps=2, batch_size=4),
    "StabilityGap": lambda: StabilityGap(every_n_steps=1, subset_size=4),
    "TradeOffCurves": lambda: TradeOffCurves(),
    "SuiteEvaluation": lambda: SuiteEvaluation(every_n_steps=1, suite=TOFUSuite(max_new_tokens=4, progress=False)),
    "DivergenceGuard": lambda: DivergenceGuard(floors={"retain/fact_acc": 0.0}),
    "NullSpaceProjection": lambda: NullSpaceProjection(energy=0.9),
}

QUIET_ARGS = ["--trainer.max_steps=2", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
              "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
              "--trainer.limit_val_batches=0", "--model.init_args.evaluate_at_start=false",
              "--model.init_args.compare_with=null", "--save_pretrained.enabled=false", "--summary.verbose=false",
              "--data.init_args.max_eval_examples=8"]


def recipes() -> list[Path]:
    """Every method config of the fictitious benchmark (``configs/methods``) of a method that trains."""
    trains = {name for name, cls in registry.methods().items() if cls.takes_optimizer_steps}
    return sorted({p for name, paths in registry.method_configs().items() if name in trains for p in paths
                   if p.parent.name == "methods"})


def run_pair(config: Path, name: str, root: Path) -> str:
    """``"trains"``, ``"refused: <message>"`` or ``"CRASH: <error>"`` for one recipe and callback."""
    cli = cli_main(["--config", str(config), "--config", TINY, *TINY_OVERRIDES.get(config.stem, []), *QUIET_ARGS,
                    f"--trainer.default_root_dir={root}"], run=False)
    method = type(cli.model).__name__
    recorder = Recorder()
    cli.trainer.callbacks.extend([CALLBACKS[name](), recorder])
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    except ValueError as err:
        named = name.split("(")[0] in str(err) and method in str(err)
        if cli.trainer.global_step == 0 and not recorder.losses and named:
            return f"refused: {err}"
        return f"CRASH: {type(err).__name__}: {err}"
    except Exception as err:  # noqa: BLE001 - every other error is a defect to report
        return f"CRASH: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if cli.trainer.global_step != 2 or not recorder.losses or not all(math.isfinite(x) for x in recorder.losses):
        return f"CRASH: {cli.trainer.global_step} steps, losses {recorder.losses}"
    return "trains"


def run_matrix(configs: list[Path] | None = None, callbacks: list[str] | None = None) -> dict[tuple[str, str], str]:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs or recipes():
            for name in callbacks or list(CALLBACKS):
                results[(config.stem, name)] = run_pair(config, name, Path(tmp) / f"{config.stem}-{len(results)}")
    return results


def table(results: dict[tuple[str, str], str]) -> str:
    names = list(dict.fromkeys(c for _, c in results))
    short = {"trains": "trains", "refused": "refused"}
    lines = ["| recipe | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for recipe in dict.fromkeys(r for r, _ in results):
        cells = [short.get(results[(recipe, c)].split(":")[0], results[(recipe, c)][:60]) for c in names]
        lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    started = time.perf_counter()
    out = run_matrix()
    print(table(out))
    counts = {k: sum(v.startswith(k) for v in out.values()) for k in ("trains", "refused", "CRASH")}
    print(f"\n{len(out)} pairs: {counts} in {time.perf_counter() - started:.0f} s")
    for (recipe, name), result in out.items():
        if not result.startswith("trains"):
            print(f"{recipe} x {name}: {result}")
    sys.exit(1 if counts["CRASH"] else 0)
