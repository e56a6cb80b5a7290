"""The registry is derived from the code, and everything that lists methods reads it: the README's
methods table, the shipped configs, the CLI and the method x callback matrix."""

import importlib
import inspect
import pkgutil

import pytest
from lightning.pytorch import Callback

import lit_unlearn
from lit_unlearn import registry
from lit_unlearn.methods import UnlearningModule
from tests.helpers import ROOT
from tests.helpers.matrix import CALLBACKS, recipes, run_matrix


def defined_in(package: str, base: type) -> set[str]:
    """Names of the concrete ``base`` subclasses defined in the modules of ``package``."""
    names = set()
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        names |= {n for n, obj in vars(module).items() if inspect.isclass(obj) and issubclass(obj, base)
                  and obj is not base and obj.__module__ == module.__name__ and not n.startswith("_")}
    return names


def test_every_method_and_callback_in_the_code_is_registered_and_exported():
    assert set(registry.methods()) == defined_in("lit_unlearn.methods", UnlearningModule)
    assert set(registry.callbacks()) == defined_in("lit_unlearn.callbacks", Callback)
    for name in [*registry.methods(), *registry.callbacks()]:
        assert getattr(lit_unlearn, name) is (registry.methods() | registry.callbacks())[name], name
    assert set(registry.callbacks(general=True)) == set(registry.callbacks()) - set(registry.OUTPUT_CALLBACKS)


def test_every_method_documents_its_objectives_and_has_a_config():
    configs = registry.method_configs()
    for name, cls in registry.methods().items():
        assert cls.forget_doc and cls.retain_doc, f"{name} lacks forget_doc/retain_doc (the README table reads them)"
        assert configs[name], f"{name} has no config in any of configs/{{{','.join(registry.CONFIG_DIRS)}}}"
    shipped = [p for folder in registry.CONFIG_DIRS for p in sorted((ROOT / "configs" / folder).glob("*.yaml"))]
    trained = [m for m in map(registry.config_method, shipped) if m is not None]  # not data-only configs
    assert trained and all(m in registry.methods() for m in trained)  # no config of an unknown method


def test_readme_methods_table_is_the_registry_table():
    readme = (ROOT / "README.md").read_text()
    assert registry.methods_table() in readme, ("README's methods table is out of date: paste the output of "
                                                "`python -m lit_unlearn.registry`")


def test_method_callback_matrix_covers_every_general_callback():
    assert {name.split("(")[0] for name in CALLBACKS} == set(registry.callbacks(general=True))
    trains = {name for name, cls in registry.methods().items() if cls.takes_optimizer_steps}
    assert {registry.config_method(p) for p in recipes()} == trains


@pytest.mark.parametrize("recipe", recipes(), ids=lambda p: p.stem)
def test_method_callback_pairs_train_or_are_refused_before_the_first_step(recipe, tiny_subject):
    results = run_matrix([recipe])
    crashes = {pair: result for pair, result in results.items() if result.startswith("CRASH")}
    assert not crashes
    assert sum(result == "trains" for result in results.values()) >= len(results) // 2  # most pairs do train


# The five pairs that died with raw errors before the callback contract was declared.
# RMU's retain term is 0 on the starting model, so a relative bound is refused (it used to grow λ without end).
FORMERLY_CRASHING = {("rmu", "DualVariable(tolerance)"): "refused", ("srmu", "DualVariable(tolerance)"): "refused",
                     ("gu_graddiff", "GradientProjection"): "refused", ("gu_npo", "GradientProjection"): "refused",
                     ("npo_qlora", "DataAttributionWeights"): "trains"}


def test_formerly_crashing_pairs(tiny_subject):
    configs = {p.stem: p for p in recipes()}
    for (recipe, callback), expected in FORMERLY_CRASHING.items():
        result = run_matrix([configs[recipe]], [callback])[(recipe, callback)]
        assert result.split(":")[0] == expected, (recipe, callback, result)
        if callback == "GradientProjection":
            assert "GradientProjection cannot be used with" in result and "more than one GradientProjection" in result
        if callback == "DualVariable(tolerance)":
            assert "DualVariable(tolerance=...) cannot be used with" in result and "(activation) is 0 " in result
