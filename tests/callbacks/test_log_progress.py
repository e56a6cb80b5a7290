"""LogProgress: plain progress lines a log file can hold (steps, loss, rate, ETA; validation and test
lines); interactive() and its environment override; the third-party tip filter; and Lightning's
test table with one column when a test has several sets."""

import io
import logging
import re

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info

from lit_unlearn import GradAscent
from lit_unlearn.callbacks import LogProgress
from lit_unlearn.callbacks.log_progress import interactive
from lit_unlearn.utils import PROGRESS_ENV, ThirdPartyTipFilter, progress, quiet_third_party
from tests.helpers import adamw, fit, quiet_trainer, tiny_data

STEP = re.compile(r"^step (\d+)/(\d+) \((\d+)%\) epoch (\d+) loss (\S+) (\S+) it/s ETA (\S+)$")


def test_fit_prints_a_plain_line_every_n_steps_with_the_loss_rate_and_eta(tiny_subject, capsys):
    module = GradAscent(model=tiny_subject, optimizer=adamw(1e-4))
    capsys.readouterr()
    trainer, recorder = fit(module, tiny_data(eval_sets=["forget", "retain"]), steps=4,
                            callbacks=[LogProgress(every_n_steps=2, every_seconds=3600)], enable_progress_bar=True,
                            val_check_interval=2, limit_val_batches=1)
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = out.splitlines()
    steps = [STEP.match(line) for line in lines if line.startswith("step ")]
    assert all(steps) and [int(m[1]) for m in steps] == [2, 4]
    assert {int(m[2]) for m in steps} == {4} and [int(m[3]) for m in steps] == [50, 100]
    for m in steps:  # the loss of that step (recorded after its batch), to 4 significant digits
        assert float(m[5]) == pytest.approx(recorder.losses[int(m[1]) - 1], rel=1e-3)
        assert float(m[6]) > 0 and m[4] == "0"  # it/s, epoch 0 (5 batches per epoch)
    assert re.fullmatch(r"\d+(\.\d)?s", steps[0][7]) and steps[-1][7] == "0.0s"  # nothing left at the last step
    assert lines[0] == "fit: 4 steps to go"
    final = [line for line in lines if line.startswith("fit: 4 steps in ")]
    assert len(final) == 1 and final[0].endswith(f"loss {recorder.losses[-1]:.4g}") and final[0] == lines[-1]
    # validation every 2 steps on two sets (one batch each): one line when it ends
    done = [line for line in lines if re.fullmatch(r"validation: 2 batches \(2 dataloaders\) in \d+\.\ds", line)]
    assert len(done) == 2
    assert lines.index(done[0]) == lines.index(steps[0][0]) + 1
    assert trainer.global_step == 4


def test_a_line_every_n_seconds_when_steps_are_not_due(tiny_subject, capsys):
    module = GradAscent(model=tiny_subject, optimizer=adamw(1e-4))
    capsys.readouterr()
    fit(module, tiny_data(eval_sets=["forget"]), steps=3, callbacks=[LogProgress(every_n_steps=0, every_seconds=1e-6)],
        enable_progress_bar=True, limit_val_batches=0)
    lines = capsys.readouterr().out.splitlines()
    assert [int(STEP.match(line)[1]) for line in lines if line.startswith("step ")] == [1, 2, 3]


def test_test_prints_its_batches_and_time_and_lightnings_table_has_one_column(tiny_subject, capsys):
    module = GradAscent(model=tiny_subject, optimizer=adamw())
    data = tiny_data(eval_sets=["forget", "retain", "holdout"])
    trainer = quiet_trainer(enable_progress_bar=True, callbacks=[LogProgress()])
    capsys.readouterr()
    returned = trainer.test(module, datamodule=data)  # verbose: Lightning prints its table
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = out.splitlines()
    assert re.fullmatch(r"test: \d+ batches \(3 dataloaders\)", lines[0])
    assert len([line for line in lines if re.fullmatch(r"test: done in \d+\.\ds", line)]) == 1
    # one column: one dict returned, one value per metric row, no second dataloader header
    assert "DataLoader 0" in out and "DataLoader 1" not in out
    assert len(returned) == 1 and returned[0]["retain/fact_acc"] == module.summary["test"]["retain/fact_acc"]
    assert float(trainer.callback_metrics["holdout/nll"]) == pytest.approx(module.summary["test"]["holdout/nll"])
    row = [line for line in lines if "forget/fact_acc" in line]
    assert len(row) == 1
    values = re.findall(r"\d+\.\d+(?:e-?\d+)?|\b[01]\b", row[0].replace("forget/fact_acc", ""))
    assert len(values) == 1 and float(values[0]) == pytest.approx(module.summary["test"]["forget/fact_acc"])


def test_interactive_follows_the_stream_unless_the_environment_says(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert interactive(Terminal()) is True and interactive(io.StringIO()) is False
    monkeypatch.setenv(PROGRESS_ENV, "plain")
    assert interactive(Terminal()) is False
    monkeypatch.setenv(PROGRESS_ENV, "bar")
    assert interactive(io.StringIO()) is True
    monkeypatch.setenv(PROGRESS_ENV, "auto")
    assert interactive(Terminal()) is True
    monkeypatch.setenv(PROGRESS_ENV, "fancy")
    with pytest.raises(ValueError, match="expected 'bar', 'plain' or 'auto'"):
        interactive()


def test_progress_in_a_log_file_prints_plain_lines_and_nothing_for_a_short_loop(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "plain")
    log = io.StringIO()
    assert list(progress(range(5), "writing", every_seconds=1e-9, file=log)) == [0, 1, 2, 3, 4]
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 6
    assert re.fullmatch(r"writing: 1/5 \(20%\) \S+ (it/s|s/it) ETA \d+\.\ds", lines[0])
    assert lines[-1].startswith("writing: 5 done in ")
    quiet = io.StringIO()
    assert list(progress(iter("abc"), "short", file=quiet)) == ["a", "b", "c"] and quiet.getvalue() == ""
    assert list(progress([1, 2], "off", disable=True)) == [1, 2]


def test_tip_filter_drops_lightnings_tips_and_keeps_its_other_messages():
    quiet_third_party()
    quiet_third_party()  # idempotent
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert sum(isinstance(f, ThirdPartyTipFilter) for f in logger.filters) == 1
    seen: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        rank_zero_info("💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]")
        rank_zero_info("an ordinary message")
    finally:
        logger.removeHandler(handler)
    assert any(m.startswith("GPU available:") for m in seen)  # Lightning's own information stays
    assert "an ordinary message" in seen
    assert not any("Tip" in m or "litlogger" in m or "litmodels" in m for m in seen), seen
