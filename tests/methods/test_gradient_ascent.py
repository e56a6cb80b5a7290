"""GradAscent and GradDiff: ascent raises the forget NLL; GradDiff's KL retain term."""


from lit_unlearn import GradAscent, GradDiff
from tests.helpers import adamw, fit, tiny_data


def test_grad_ascent_raises_forget_nll(tiny_subject):
    module = GradAscent(model=tiny_subject, optimizer=adamw(1e-3))
    assert module.retain_kind is None and not module.has_retain_term()
    _, rec = fit(module, tiny_data(batch_size=5), steps=6)
    assert all(o.retain is None for o in rec.objectives)
    start, end = module.summary["start"], module.summary["end"]
    assert end["forget/nll"] > 4 * start["forget/nll"]
    assert end["forget/fact_acc"] < start["forget/fact_acc"]


def test_graddiff_kl_retain_term_and_its_reference_stays_out_of_checkpoints(tiny_subject):
    module = GradDiff(model=tiny_subject, retain_loss="kl", optimizer=adamw(1e-3))
    assert module.retain_kind == "kl" and GradDiff(model=tiny_subject).retain_kind == "nll"
    _, rec = fit(module, steps=2)
    assert rec.objectives[0].retain.abs().max() < 1e-5  # KL of the model against itself
    assert rec.objectives[1].retain.abs().max() > 1e-6  # and no longer after a step
    assert not any("reference" in k for k in module.state_dict())
    assert sorted(module.state_dict()) == sorted(f"model.{k}" for k in module.model.state_dict())
