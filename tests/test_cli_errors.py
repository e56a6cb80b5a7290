"""Bad input across config, model, data and callbacks: each ends `lit-unlearn` with one clear
first line that names the argument, exit status 2, no traceback and nothing written.

    python tests/test_cli_errors.py    # prints the table of inputs and messages
"""

import contextlib
import io
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from lit_unlearn.cli import main

TINY = "builtin:tiny/subject"


def base():
    return {"seed_everything": 0,
            "model": {"class_path": "GradDiff", "init_args": {"model": TINY, "compare_with": None}},
            "data": {"class_path": "FictitiousPeople", "init_args": {"preset": "tiny", "batch_size": 4}},
            "trainer": {"max_steps": 2, "enable_progress_bar": False, "limit_val_batches": 0,
                        "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                   "init_args": {"save_dir": "runs"}}}}


def with_(path, value, cfg=None):
    cfg = cfg or base()
    node = cfg
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return cfg


def arg(key, value, cfg=None):
    """The base config with ``model.init_args.<key>`` set."""
    return with_(f"model.init_args.{key}", value, cfg)


def on(method, **args):
    """The base config with ``method`` and its ``args``."""
    cfg = with_("model.class_path", method)
    for key, value in args.items():
        cfg = arg(key, value, cfg)
    return cfg


def callback(name, init_args, cfg=None):
    """The base config (or ``cfg``) with one lit-unlearn callback."""
    return with_("trainer.callbacks", [{"class_path": f"lit_unlearn.{name}", "init_args": init_args}], cfg)


def data(**kwargs):
    return {"class_path": "ForgetRetainDataModule",
            "init_args": {"forget": "forget.json", "retain": "retain.json", "tokenizer": TINY, "batch_size": 2,
                          **kwargs}}


def write_inputs(tmp: Path) -> None:
    (tmp / "forget.json").write_text(json.dumps([{"question": "Who is Ann?", "answer": "A baker."}] * 4))
    (tmp / "retain.json").write_text(json.dumps([{"question": "Who is Bob?", "answer": "A cook."}] * 4))
    (tmp / "typo.json").write_text(json.dumps([{"question": "Who is Ann?", "answer": "A baker."},
                                               {"quest": "Who?", "answer": "x"}]))
    (tmp / "empty.json").write_text("[]")
    (tmp / "broken.json").write_text('[{"question": ')
    (tmp / "notes.txt").write_text("hello")
    (tmp / "bad.yaml").write_text("model: [unclosed\n")
    (tmp / "a_file").write_text("x")
    (tmp / "empty_dir").mkdir()


CASES = [
    ('config', 'YAML key typo in the method', lambda: arg("betta", 0.2), ["fit"], "'betta' is not accepted"),
    ('config', 'YAML key typo in the trainer', lambda: with_("trainer.max_stepz", 3), ["fit"], "'trainer.max_stepz'"),
    ('config', 'unknown method class', lambda: with_("model.class_path", "NPOO"), ["fit"], "unknown class 'NPOO'"),
    ('config', 'config file missing', None, ["fit", "--config", "missing.yaml"], 'missing.yaml'),
    ('config', 'config file not valid YAML', None, ["fit", "--config", "bad.yaml"], 'Problems parsing config'),
    ('config', 'resume checkpoint missing',
     lambda: base(), ["fit", "--ckpt_path", "nowhere.ckpt"], "--ckpt_path 'nowhere.ckpt'"),
    ('model', 'model path does not exist',
     lambda: arg("model", "./no_such_model"), ["fit"], "no_such_model' does not exist"),
    ('model', 'model path is a file', lambda: arg("model", "./a_file"), ["fit"], "a_file' is a file"),
    ('model', 'model directory without config.json',
     lambda: arg("model", "./empty_dir"), ["fit"], 'has no config.json'),
    ('model', 'negative forget_weight',
     lambda: arg("forget_weight", -1.0), ["fit"], '`forget_weight` must be a finite number >= 0'),
    ('model', 'NPO beta 0', lambda: on("NPO", beta=0), ["fit"], '`beta` must be a number > 0'),
    ('model', 'unknown retain_loss', lambda: arg("retain_loss", "mse"), ["fit"], '`retain_loss` must be one of'),
    ('model', 'unknown dtype', lambda: arg("dtype", "float8"), ["fit"], '`dtype` must be one of'),
    ('model', 'unknown quantization', lambda: arg("quantization", "int4"), ["fit"], '`quantization` must be one of'),
    ('model', 'quantization without lora', lambda: arg("quantization", "nf4"), ["fit"], 'needs `lora`'),
    ('model', 'unknown LoRA field', lambda: arg("lora", {"rank": 8}), ["fit"], "unknown field\\(s\\) \\['rank'\\]"),
    ('model', 'RMU layer beyond the model',
     lambda: on("RMU", layer=9), ["fit"], '`layer`=9 but the model has 2 layers'),
    ('model', 'RMU negative steering coefficient',
     lambda: on("RMU", steering_coeff=-1.0), ["fit"], '`steering_coeff` must be a number > 0'),
    ('model', 'REGLU negative regulariser weight',
     lambda: on("REGLU", reg_weight=-1.0), ["fit"], '`reg_weight` must be a finite number >= 0'),
    ('data', 'forget file missing',
     lambda: with_("data", data(forget="nope.json")), ["fit"], "nope.json' does not exist"),
    ('data', 'record lacks the question field',
     lambda: with_("data", data(forget="typo.json")), ["fit"], "row 1 of 'typo.json' has no field 'question'"),
    ('data', 'empty forget file',
     lambda: with_("data", data(forget="empty.json")), ["fit"], "forget set \\('empty.json'\\) is empty"),
    ('data', 'truncated JSON',
     lambda: with_("data", data(forget="broken.json")), ["fit"], "'broken.json' is not valid JSON"),
    ('data', 'unsupported file type',
     lambda: with_("data", data(forget="notes.txt")), ["fit"], "unsupported file extension '.txt'"),
    ('data', 'batch_size 0',
     lambda: with_("data.init_args.batch_size", 0), ["fit"], '`batch_size` must be a positive integer'),
    ('data', 'unknown sampling',
     lambda: with_("data.init_args.sampling", "random"), ["fit"], '`sampling` must be one of'),
    ('data', 'unknown benchmark split',
     lambda: with_("data.init_args.split", "forget50"), ["fit"], '`split` must be one of'),
    ('data', 'max_length too short for the prompts',
     lambda: with_("data.init_args.max_length", 4), ["fit"], 'max_length=4 leaves no answer token'),
    ('callbacks', 'DualVariable with epsilon and tolerance',
     lambda: callback("DualVariable", {"epsilon": 1.0, "tolerance": 0.1}), ["fit"], 'exactly one of `epsilon`'),
    ('callbacks', 'GradientProjection k=0',
     lambda: callback("GradientProjection", {"k": 0}), ["fit"], '`k` must be an integer >= 1'),
    ('callbacks', 'DivergenceGuard unknown action',
     lambda: callback("DivergenceGuard", {"action": "explode"}), ["fit"], '`action` must be one of'),
    ('callbacks', 'StabilityGap every_n_steps 0',
     lambda: callback("StabilityGap", {"every_n_steps": 0}), ["fit"], '`every_n_steps` must be a positive integer'),
    ('callbacks', 'RelearningProbe negative lr',
     lambda: callback("RelearningProbe", {"lr": -1.0}), ["fit"], '`lr` must be a number > 0'),
    ('callbacks', 'SuiteEvaluation every_n_steps -1',
     lambda: callback("SuiteEvaluation", {"every_n_steps": -1}), ["fit"], '`every_n_steps` must be an integer >= 0'),
    ('callbacks', 'StabilityGap set that is not evaluated',
     lambda: callback("StabilityGap", {"sets": ["nonexistent"]}), ["fit"], "`sets` must include 'retain'"),
    ('callbacks', 'DualVariable on a method without a retain term',
     lambda: callback("DualVariable", {"epsilon": 1.0}, with_("model.class_path", "GradAscent")), ["fit"],
     'DualVariable cannot be used with GradAscent: it constrains the retain term'),
    ('callbacks', 'SuiteEvaluation without a suite',
     lambda: callback("SuiteEvaluation", {}), ["fit"],
     'SuiteEvaluation cannot be used with GradDiff: no evaluation suite'),
    ('callbacks', 'SuiteEvaluation suite reading a set the data lacks (found before training, not after)',
     lambda: callback("SuiteEvaluation", {"at_start": False}, arg("suite", {
         "class_path": "lit_unlearn.TOFUSuite", "init_args": {"extra_sets": ["nonexistent"]}})), ["fit"],
     "TOFUSuite reads the set\\(s\\) \\['nonexistent'\\].*eval_sets"),
    ('callbacks', 'SavePretrained enabled not a boolean',
     lambda: base(), ["fit", "--save_pretrained.enabled=maybe"], 'save_pretrained.enabled'),
]


def run_case(tmp: Path, make, argv) -> tuple[int, list[str]]:
    """Run ``lit-unlearn`` in-process in ``tmp``; (exit status, stderr lines)."""
    args = list(argv)
    if make is not None:
        (tmp / "case.yaml").write_text(yaml.safe_dump(make()))
        args += ["--config", "case.yaml"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("kind,name,make,argv,expected", CASES, ids=[c[1] for c in CASES])
def test_bad_input_gets_one_clear_line_and_leaves_nothing(kind, name, make, argv, expected, tmp_path, monkeypatch,
                                                          tiny_subject):
    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = {p.name for p in tmp_path.iterdir()}
    code, lines = run_case(tmp_path, make, argv)
    assert code == 2
    assert lines and lines[0].startswith("lit-unlearn: error: "), lines[:3]
    assert re.search(expected, lines[0]), lines[0]
    assert not any("Traceback" in line for line in lines), lines
    assert {p.name for p in tmp_path.iterdir()} - before - {"case.yaml"} == set()  # nothing written


if __name__ == "__main__":
    import logging
    import tempfile
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    print("| area | bad input | exit | first line of stderr | left behind |")
    print("|---|---|---|---|---|")
    for kind, name, make, argv, _ in CASES:
        tmp = Path(tempfile.mkdtemp())
        write_inputs(tmp)
        os.chdir(tmp)
        before = {p.name for p in tmp.iterdir()}
        code, lines = run_case(tmp, make, argv)
        left = sorted({p.name for p in tmp.iterdir()} - before - {"case.yaml"}) or "nothing"
        print(f"| {kind} | {name} | {code} | {lines[0] if lines else ''} | {left} |", flush=True)
