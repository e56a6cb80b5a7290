"""GeneralReplay (GeRe): each loss against a hand computation on a tiny Llama, TM at the start
model, where the gradient goes, a real fit that logs train/replay_loss, the YAML config, bad input."""

import contextlib
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_unlearn import KFADE, NPO, GeneralReplay, load_causal_lm
from tests.helpers import TINY, adamw, fit, method_config, tiny_data

TEXTS = ["The river runs past the old mill and into the sea.",
         "Numbers are added one column at a time, carrying tens.",
         "A library lends books to anyone with a card.",
         "Bread rises because yeast makes gas in the dough.",
         "The moon has no light of its own; it reflects the sun.",
         "Trains leave every hour from the north platform."]


class Stub:
    """What GeneralReplay reads from a method, without a Trainer: the model, its tokenizer and a
    frozen start copy for θ0's logits."""

    def __init__(self, model, tokenizer, data=None):
        self.model, self.tokenizer, self.data = model, tokenizer, data
        self.start = copy.deepcopy(model).eval().requires_grad_(False)
        self.device, self.global_step, self._lora_applied, self._trainer = torch.device("cpu"), 0, False, None

    def adapters_disabled(self):
        return contextlib.nullcontext()

    def eval_context(self):
        return contextlib.nullcontext()

    def _datamodule(self):
        return self.data

    @torch.no_grad()
    def reference_logits(self, batch):
        return self.start(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.fixture
def stub(random_model_dir, tokenizer):
    return Stub(load_causal_lm(random_model_dir), tokenizer)


def move_weights(model, scale=0.05):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))


@torch.no_grad()
def by_hand(stub, loss, rows_of_batch, seed=1, n=4, layer=-1, k=1.0, temperature=2.0):
    """The loss term on one replay batch, computed text by text without padding, as GeRe's code does."""
    order = torch.randperm(len(TEXTS), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    ids = [torch.tensor([stub.tokenizer(TEXTS[i], add_special_tokens=False)["input_ids"]]) for i in order]
    with torch.no_grad():
        start = [stub.start(input_ids=x, output_hidden_states=True) for x in ids]
    h0 = [o.hidden_states[layer][0].double() for o in start]
    flat = torch.cat(h0)
    mean = flat.mean(0)
    std = (flat.square().mean(0) - mean.square()).sqrt()
    lo, hi = mean - k * std, mean + k * std
    total = nonzero = tokens = 0
    nll_sum = kl_sum = abs_sum = sq_sum = 0.0
    for r in rows_of_batch:
        out = stub.model(input_ids=ids[r], output_hidden_states=True)
        h = out.hidden_states[layer][0].double()
        neg, pos = h0[r] <= lo, h0[r] >= hi
        neu = ~neg & ~pos
        m = torch.relu(h - lo) * neg + torch.relu(hi - h) * pos + (torch.relu(h - hi) + torch.relu(lo - h)) * neu
        total, nonzero = total + m.sum(), nonzero + (m != 0).sum()
        logits = out.logits[0].double()
        nll_sum = nll_sum + F.cross_entropy(logits[:-1], ids[r][0, 1:], reduction="sum")
        p0 = F.log_softmax(start[r].logits[0].double() / temperature, -1)
        q = F.log_softmax(logits / temperature, -1)
        kl_sum = kl_sum + (p0.exp() * (p0 - q)).sum()
        abs_sum, sq_sum = abs_sum + (h - h0[r]).abs().sum(), sq_sum + (h - h0[r]).square().sum()
        tokens += ids[r].shape[1]
    entries = tokens * h.shape[-1]
    predicted = tokens - len(rows_of_batch)
    return {"tm": float(total / (nonzero + 1e-8)), "nll": float(nll_sum / predicted), "kl": float(kl_sum / tokens),
            "l1": float(abs_sum / entries), "l2": float(sq_sum / entries)}


@pytest.mark.parametrize("loss", ["tm", "nll", "kl", "l1", "l2"])
def test_each_loss_equals_the_hand_computation(loss, stub):
    replay = GeneralReplay(TEXTS, n=4, loss=loss, batch_size=3, seed=1, label_fitting=False, constraint_weight=1.0)
    replay.prepare(stub)
    assert len(replay.ids) == 4
    if loss == "tm":  # at the start weights no entry violates its threshold: exactly zero
        assert float(replay(stub).detach()) == 0.0
        replay.calls = 0
    move_weights(stub.model)
    value = replay(stub).detach()
    expected = by_hand(stub, loss, [0, 1, 2])
    assert float(value) == pytest.approx(expected[loss], rel=1e-6, abs=1e-6)
    assert float(replay.logs[f"replay_{loss}"]) == pytest.approx(expected[loss], rel=1e-6, abs=1e-6)
    assert float(replay.logs["replay_nll"]) == pytest.approx(expected["nll"], rel=1e-6)
    if loss != "nll":
        assert expected[loss] > 1e-4  # the moved weights left the start model's activations/logits


def test_published_defaults_combine_nll_and_100_margin_and_cycle(stub):
    replay = GeneralReplay(TEXTS, n=4, batch_size=3, seed=1)  # tm, label fitting, weight 100, k = 1, last layer
    assert (replay.loss, replay.constraint_weight, replay.threshold_std, replay.layers) == ("tm", 100.0, 1.0, [-1])
    dynamic = GeneralReplay(TEXTS, n=4, batch_size=3, seed=1, constraint_weight="dynamic", layers=[1, -1])
    replay.prepare(stub)
    dynamic.prepare(stub)
    assert dynamic.low.shape == (64,)  # two layers of 32 units
    move_weights(stub.model)
    expected = by_hand(stub, "tm", [0, 1, 2])
    assert float(replay(stub).detach()) == pytest.approx(expected["nll"] + 100 * expected["tm"], rel=1e-6)
    assert replay.next_rows(stub) == [3, 0, 1]  # the fixed order, cycled
    assert float(dynamic(stub).detach()) == pytest.approx(2 * float(dynamic.logs["replay_nll"]), rel=1e-5)


def test_a_checkpoint_state_keeps_the_start_statistics(stub):
    replay = GeneralReplay(TEXTS, n=4, batch_size=3, seed=1)
    replay.prepare(stub)
    move_weights(stub.model)
    restored = GeneralReplay(TEXTS, n=4, batch_size=3, seed=1)
    restored.load_state_dict(torch.load(_saved(replay.state_dict()), weights_only=False))
    restored.prepare(stub)  # kept, not recomputed from the moved weights
    assert torch.equal(restored.low, replay.low) and float(restored(stub).detach()) == float(replay(stub).detach())


def test_the_method_checkpoint_carries_the_replay_state(stub, tiny_subject):
    """Through the module's own checkpoint hooks, as Lightning calls them."""
    replay = GeneralReplay(TEXTS, n=4, batch_size=3, seed=1)
    replay.prepare(stub)
    replay.next_rows(stub)
    checkpoint = {}
    NPO(model=tiny_subject, replay=replay).on_save_checkpoint(checkpoint)
    fresh = NPO(model=tiny_subject, replay=GeneralReplay(TEXTS, n=4, batch_size=3, seed=1))
    assert fresh.replay.low is None
    fresh.on_load_checkpoint(torch.load(_saved(checkpoint), weights_only=False))
    assert torch.equal(fresh.replay.low, replay.low) and torch.equal(fresh.replay.high, replay.high)
    assert fresh.replay.calls == replay.calls == 1 and fresh.replay.next_rows(stub) == replay.next_rows(stub)


def _saved(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_gradient_reaches_only_the_trained_model(stub):
    for loss in ("tm", "kl", "l2"):
        replay = GeneralReplay(TEXTS, n=4, loss=loss, batch_size=2)
        replay.prepare(stub)
        move_weights(stub.model)
        stub.model.zero_grad()
        replay(stub).backward()
        grads = [p.grad for p in stub.model.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
        assert all(p.grad is None for p in stub.start.parameters())
        assert all(not t.requires_grad for t in replay.targets or [])
        if loss == "tm":
            assert not replay.low.requires_grad and replay.targets[0].dtype == torch.int8


def test_texts_from_a_file_and_from_a_datamodule_set(stub, tmp_path):
    path = tmp_path / "general.jsonl"
    path.write_text("\n".join(json.dumps({"body": t}) for t in TEXTS) + "\n")
    from_file = GeneralReplay(str(path), n=4, loss="nll", seed=1, text_field="body")
    from_list = GeneralReplay(TEXTS, n=4, loss="nll", seed=1)
    from_file.prepare(stub)
    from_list.prepare(stub)
    assert all(torch.equal(a, b) for a, b in zip(from_file.ids, from_list.ids))
    data = tiny_data()
    stub.data = data
    retain = GeneralReplay("retain", n=5, loss="nll", seed=2)
    retain.prepare(stub)
    order = torch.randperm(len(data.retain_records), generator=torch.Generator().manual_seed(2))[:5].tolist()
    expected = data.encode(data.retain_records, "retain").examples
    assert [x.tolist() for x in retain.ids] == [expected[i][0].tolist() for i in order]  # prompt + answer
    with pytest.raises(ValueError, match=r"`texts` 'nope' is not a set of the datamodule.*'retain'"):
        GeneralReplay("nope").prepare(stub)
    with pytest.raises(ValueError, match=r"`layers` \[5\] out of range: the model has 3 hidden states"):
        GeneralReplay(TEXTS, layers=[5]).prepare(stub)


class ReplayLogs(Callback):
    def __init__(self):
        self.logs = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.logs.append({k: float(v) for k, v in pl_module.replay.logs.items()})


@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_fit_with_replay_logs_the_replay_loss(lora, tiny_subject, tmp_path):
    replay = GeneralReplay("retain", n=8, batch_size=2, constraint_weight=1.0)
    module = NPO(model=tiny_subject, optimizer=adamw(1e-2), evaluate_at_start=False, lora=lora, replay=replay)
    logs = ReplayLogs()
    trainer, rec = fit(module, tiny_data(eval_sets=["forget"]), steps=3, callbacks=[logs], limit_val_batches=0,
                       logger=TensorBoardLogger(tmp_path, name="gere"), log_every_n_steps=1)
    assert logs.logs[0]["replay_tm"] == 0.0 and logs.logs[-1]["replay_tm"] > 0  # θ0's activations, then moved
    assert replay.calls == 3 and module._reference is None  # TM keeps no copy of the model
    events = EventAccumulator(trainer.logger.log_dir)
    events.Reload()
    logged = [e.value for e in events.Scalars("train/replay_loss")]
    assert len(logged) == 3
    assert logged[0] == pytest.approx(logs.logs[0]["replay_nll"], rel=1e-5)  # the margin is 0 at the start
    assert {"train/replay_nll", "train/replay_tm"} <= set(events.Tags()["scalars"])


def test_npo_gere_config_builds_the_replay(tiny_subject):
    from lit_unlearn.cli import cli_main

    cli = cli_main(["--config", method_config("npo_gere"), "--config", TINY, "--trainer.logger=false"], run=False)
    replay = cli.model.replay
    assert isinstance(replay, GeneralReplay)
    assert (replay.texts, replay.n, replay.loss, replay.constraint_weight) == ("retain", 64, "tm", 100.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"texts": []}, "`texts` is an empty list"),
    ({"texts": ["ok", ""]}, "`texts` item 1"),
    ({"texts": "general.parquet"}, "must end in one of .json, .jsonl, .txt"),
    ({"texts": "missing.txt"}, "`texts` file 'missing.txt' does not exist"),
    ({"n": 0}, "`n` must be a positive integer"),
    ({"loss": "mse"}, "`loss` must be one of"),
    ({"weight": -1}, "`weight`"),
    ({"batch_size": 0}, "`batch_size`"),
    ({"layers": []}, "`layers` must be a non-empty list"),
    ({"layers": [-1, -1]}, "`layers` must be a non-empty list of distinct"),
    ({"threshold_std": -0.5}, "`threshold_std`"),
    ({"constraint_weight": "dy"}, "`constraint_weight` must be a number >= 0 or 'dynamic'"),
    ({"constraint_weight": "dynamic", "label_fitting": False}, "`constraint_weight: dynamic`"),
    ({"kl_temperature": 0}, "`kl_temperature`"),
    ({"max_length": 1}, "`max_length` must be at least 2"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace(".", r"\.").replace("[", r"\[")):
        GeneralReplay(**kwargs)


def test_replay_must_be_a_general_replay_of_a_method_using_the_base_step(tiny_subject):
    with pytest.raises(TypeError, match="`replay` must be a GeneralReplay"):
        NPO(model=tiny_subject, replay={"loss": "tm"})
    with pytest.raises(ValueError, match="KFADE takes its own training steps.*remove `replay`"):
        KFADE(model=tiny_subject, replay=GeneralReplay())
