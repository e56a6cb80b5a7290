"""The one registry of methods and callbacks, derived from the code.

A method is every ``UnlearningModule`` subclass that :mod:`lit_unlearn.methods` exports; a
callback every ``Callback`` that :mod:`lit_unlearn.callbacks` exports. The CLI (``lit-unlearn
methods``, its error messages), the README's methods table (:func:`methods_table`), the shipped
configs (:func:`method_configs`) and the test matrices all read these functions, so a new
method is one file plus its export, one YAML and one test.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from lightning.pytorch import Callback

from lit_unlearn import callbacks as _callbacks
from lit_unlearn import methods as _methods
from lit_unlearn.methods.base import UnlearningModule

# Callbacks that write a run's outputs or its progress; lit-unlearn adds them itself (not "general" callbacks).
OUTPUT_CALLBACKS = ("RunSummary", "SavePretrained", "LogProgress")
CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"  # in a source checkout


def methods() -> dict[str, type[UnlearningModule]]:
    """``{name: class}`` of every method, in the order ``lit_unlearn.methods`` exports them."""
    out = {}
    for name in _methods.__all__:
        obj = getattr(_methods, name)
        if isinstance(obj, type) and issubclass(obj, UnlearningModule) and obj is not UnlearningModule:
            out[name] = obj
    return out


def callbacks(general: bool = False) -> dict[str, type[Callback]]:
    """``{name: class}`` of every callback; ``general``: without the output callbacks."""
    out = {}
    for name in _callbacks.__all__:
        obj = getattr(_callbacks, name)
        if isinstance(obj, type) and issubclass(obj, Callback) and not (general and name in OUTPUT_CALLBACKS):
            out[name] = obj
    return out


def config_method(path: Path) -> str | None:
    """The method class name a YAML config trains (``model.class_path``, short or dotted), or None."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    model = data.get("model") if isinstance(data, dict) else None
    class_path = model.get("class_path") if isinstance(model, dict) else None
    return class_path.rsplit(".", 1)[-1] if isinstance(class_path, str) else None


# the fictitious benchmark, the real model (RWKU), your own data, DUSK documents, code leakage
CONFIG_DIRS = ("methods", "rwku", "own", "dusk", "code")


def method_configs(root: Path = CONFIG_ROOT) -> dict[str, list[Path]]:
    """``{method: [configs]}`` over ``<root>/<folder>/*.yaml`` for each of ``CONFIG_DIRS`` in order (every
    method, possibly with none); ``configs/methods`` first, shortest name first within a folder."""
    out: dict[str, list[Path]] = {name: [] for name in methods()}
    for folder in CONFIG_DIRS:
        for path in sorted((Path(root) / folder).glob("*.yaml"), key=lambda p: (len(p.name), p.name)):
            name = config_method(path)
            if name is not None:
                out.setdefault(name, []).append(path)
    return out


def methods_table(root: Path = CONFIG_ROOT) -> str:
    """The README's methods table: class, forget objective, retain term, shipped configs."""
    configs = method_configs(root)
    lines = ["| class | forget objective | retain | configs |", "|---|---|---|---|"]
    for name, cls in methods().items():
        paths = ", ".join(f"`configs/{p.parent.name}/{p.name}`" for p in configs.get(name, []))
        cells = [f"`{name}`", cls.forget_doc, cls.retain_doc, paths or "-"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") if i in (1, 2) else c for i, c in enumerate(cells)) + " |")
    return "\n".join(lines)


def callbacks_table() -> str:
    """One line per callback: its name and the first line of its docstring."""
    def first_sentence(doc: str | None) -> str:
        text = " ".join((doc or "").strip().split("\n\n")[0].split())
        return text.split(". ")[0].rstrip(".") + "."

    return "\n".join(f"{name:24s} {first_sentence(cls.__doc__)}" for name, cls in callbacks().items())


if __name__ == "__main__":  # python -m lit_unlearn.registry: print the README's methods table
    print(methods_table())
