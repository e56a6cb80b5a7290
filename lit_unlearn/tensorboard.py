"""TensorBoard for unlearning runs: one run per evaluation set, charts that have data, final metrics in HPARAMS.

Metric names name their set: ``<set>/<metric>`` (teacher-forced evaluation) or
``<group>/<set>/<metric>`` (``suite/forget/prob``, ``stability/retain/acc``). On a
``TensorBoardLogger`` each set is its own run, ``<log_dir>/<set>``, and the set segment
leaves the tag (``eval/fact_acc``, ``suite/prob``, ``stability/acc``), as
``SummaryWriter.add_scalars`` does: one chart per metric, one colour per set, the run names
as the legend. Other loggers get the names unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

EVAL_GROUP = "eval"  # the tag group of teacher-forced evaluation metrics
_WRITERS: dict[str, Any] = {}


def place(key: str, sets: Iterable[str]) -> tuple[str | None, str]:
    """``(set run or None, tag)`` of a metric name, given the evaluation set names."""
    parts = key.split("/")
    sets = set(sets)
    if len(parts) == 2 and parts[0] in sets:
        return parts[0], f"{EVAL_GROUP}/{parts[1]}"
    if len(parts) >= 3 and parts[1] in sets:
        return parts[1], "/".join([parts[0], *parts[2:]])
    return None, key


def tensorboard_loggers(loggers) -> list:
    from lightning.pytorch.loggers import TensorBoardLogger

    return [lg for lg in loggers if isinstance(lg, TensorBoardLogger)]


def set_writer(logger, name: str):
    """The ``SummaryWriter`` of the run ``<log_dir>/<name>`` beside a TensorBoardLogger's run (cached;
    a resumed run drops the events after its checkpoint there too)."""
    from torch.utils.tensorboard import SummaryWriter

    path = f"{logger.log_dir}/{name.replace('/', '_')}"
    if path not in _WRITERS:
        _WRITERS[path] = SummaryWriter(log_dir=path, purge_step=logger._kwargs.get("purge_step"))
    return _WRITERS[path]


def log_metrics(loggers, metrics: dict[str, float], step: int, sets: Iterable[str]) -> None:
    """Log ``metrics`` at ``step``: on TensorBoard, metrics of a set go to that set's run (see
    :func:`place`); other loggers get them unchanged. Call on rank 0 only."""
    sets, tensorboard = list(sets), tensorboard_loggers(loggers)
    for logger in loggers:
        if logger not in tensorboard:
            logger.log_metrics(metrics, step=step)
            continue
        main = {}
        for key, value in metrics.items():
            run, tag = place(key, sets)
            if run is None:
                main[tag] = value
            else:
                set_writer(logger, run).add_scalar(tag, value, step)
        if main:
            logger.log_metrics(main, step=step)
        for run in {place(k, sets)[0] for k in metrics} - {None}:
            set_writer(logger, run).flush()


def close_set_writers(logger) -> None:
    """Close the per-set writers of a logger's run (at the end of fit)."""
    prefix = f"{logger.log_dir}/"
    for path in [p for p in _WRITERS if p.startswith(prefix)]:
        _WRITERS.pop(path).close()


TITLES = {  # chart titles; other charts are titled by their tag
    "eval/fact_acc": "fact accuracy (whole fact span predicted)", "eval/token_acc": "answer token accuracy",
    "eval/nll": "answer NLL", "eval/prob": "answer probability", "train/loss": "training loss",
    "stability/acc": "stability: accuracy on fixed subsets",
}


def custom_layout(keys: Iterable[str], sets: Iterable[str]) -> dict:
    """A custom-scalars layout with one chart per tag that ``keys`` (metric names, see :func:`place`)
    log to: every line of a chart is a run (a set), in its own colour, named in the legend, and no
    chart is there without data."""
    sets = list(sets)
    tags = dict.fromkeys(place(key, sets)[1] for key in keys)
    return {"lit-unlearn: forget vs retain": {TITLES.get(tag, tag): ["Multiline", [f"^{tag}$"]] for tag in tags}}


def write_hparams(logger, params: dict[str, Any], metric_keys: Iterable[str], sets: Iterable[str]) -> None:
    """Hyper-parameters and final metrics for TensorBoard's HPARAMS tab, without new scalar cards:
    each metric column is the last value of a curve already logged (its set's run and tag)."""
    from lightning.fabric.utilities.logger import _convert_params, _flatten_dict, _sanitize_params
    from tensorboard.plugins.hparams.api_pb2 import MetricInfo, MetricName
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams

    params = {k: v for k, v in dict(params).items() if not str(k).startswith("_")}  # not the CLI's _class_path
    values = _sanitize_params(_flatten_dict(_convert_params(params)))
    experiment, start, end = hparams(values, {})
    sets = list(sets)
    infos = []
    for key in metric_keys:
        run, tag = place(key, sets)
        infos.append(MetricInfo(name=MetricName(group=run or "", tag=tag), display_name=key))
    value = experiment.value[0]  # add the metric columns, each naming its run (group) and tag
    content = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    content.experiment.metric_infos.extend(infos)
    value.metadata.plugin_data.content = content.SerializeToString()
    writer = logger.experiment._get_file_writer()
    for summary in (experiment, start, end):
        writer.add_summary(summary)
    logger.experiment.flush()
