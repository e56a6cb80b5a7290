"""``lit-unlearn sweep``: multi-objective hyper-parameter search of any config key on Optuna."""

from lit_unlearn.sweep.space import Constraint, Parameter, SweepSpec, load_spec

__all__ = ["Constraint", "Parameter", "SweepSpec", "load_spec"]
