"""The CREAM loss: hand-worked values, C = 1 equals TRL's stock sigmoid DPO loss, cream == cream-avg on equal C."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from cream_data.rewards.dpo import pair_weights  # noqa: E402
from cream_train.loss import cream_loss  # noqa: E402


def _softplus(x: float) -> float:  # -log sigmoid(-x) = log(1 + e^x), written out by hand
    return math.log1p(math.exp(x))


def test_hand_computed_values():
    # pair 0: policy (-10, -12), reference (-11, -11): h = (1) - (-1) = 2, beta*h = 0.2
    # pair 1: policy (-5, -4), reference (-5, -5): h = 0 - 1 = -1, beta*h = -0.1
    pc, pr = torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0])
    rc, rr = torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -5.0])
    c = torch.tensor([0.8, 0.25])
    losses, cr, rj = cream_loss(pc, pr, rc, rr, c, beta=0.1)
    # loss = C * log(1 + e^{-bh}) + (1 - C) * log(1 + e^{bh})
    want0 = 0.8 * _softplus(-0.2) + 0.2 * _softplus(0.2)
    want1 = 0.25 * _softplus(0.1) + 0.75 * _softplus(-0.1)
    assert losses.tolist() == pytest.approx([want0, want1], abs=1e-6)
    assert want0 == pytest.approx(0.63814, abs=1e-5)  # 0.8*0.59814 + 0.2*0.79814 = 0.47851 + 0.15963
    assert cr.tolist() == pytest.approx([0.1, 0.0], abs=1e-6)
    assert rj.tolist() == pytest.approx([-0.1, 0.1], abs=1e-6)


def test_c_one_is_dpo_and_c_half_is_symmetric():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, generator=g, dtype=torch.float64) * 20 for _ in range(4))
    h = (pc - rc) - (pr - rr)
    dpo = torch.log1p(torch.exp(-0.1 * h))
    assert torch.allclose(cream_loss(pc, pr, rc, rr, 1.0, 0.1).losses, dpo)
    half = cream_loss(pc, pr, rc, rr, 0.5, 0.1).losses
    swapped = cream_loss(pr, pc, rr, rc, 0.5, 0.1).losses  # chosen <-> rejected flips the sign of h
    assert torch.allclose(half, swapped)
    # C = 0 is DPO on the reversed pair
    assert torch.allclose(cream_loss(pc, pr, rc, rr, 0.0, 0.1).losses, cream_loss(pr, pc, rr, rc, 1.0, 0.1).losses)


def test_stable_for_large_margins():
    big = torch.tensor([1e4], dtype=torch.float32)
    zero = torch.zeros(1)
    losses = cream_loss(big, zero, zero, zero, torch.tensor([0.9]), beta=0.1).losses
    assert torch.isfinite(losses).all() and losses.item() == pytest.approx(0.1 * 0.1 * 1e4, rel=1e-4)


def test_cream_equals_cream_avg_when_weights_are_equal():
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (torch.randn(6, generator=g) * 5 for _ in range(4))
    w = [0.7] * 6
    a = cream_loss(pc, pr, rc, rr, torch.tensor(pair_weights("cream", w, 6)), 0.1).losses
    b = cream_loss(pc, pr, rc, rr, torch.tensor(pair_weights("cream-avg", w, 6)), 0.1).losses
    assert torch.equal(a, b)
    assert pair_weights("cream-avg", [0.2, 0.6, 1.0], 3) == pytest.approx([0.6] * 3)
    assert pair_weights("dpo", None, 2) == [1.0, 1.0]
    with pytest.raises(ValueError, match="expected one of"):
        pair_weights("ipo", w, 6)


def test_c_one_equals_trl_stock_sigmoid_dpo_loss(tiny_model, tiny_model_b, tmp_path):
    """Our trainer with C = 1 and TRL's own DPOTrainer (loss_type sigmoid) give the same loss on the same batch,
    with a reference model different from the policy (so h != 0)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from cream_train.dpo import CreamDPOTrainer, WeightedPreferenceCollator
    from tests.support.training import PAIRS

    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = {"prompt": [[{"role": "user", "content": q}] for q, _, _ in PAIRS[:4]],
            "chosen": [[{"role": "assistant", "content": c}] for _, c, _ in PAIRS[:4]],
            "rejected": [[{"role": "assistant", "content": r}] for _, _, r in PAIRS[:4]]}

    def args(name):
        # beta = 10: two random tiny models are nearly uniform, so their margins are small
        from cream_train.train import checkpointing_arg

        return DPOConfig(output_dir=str(tmp_path / name), beta=10.0, loss_type="sigmoid", bf16=False,
                         **{checkpointing_arg(): False}, report_to=[], max_length=None, disable_tqdm=True)

    def load(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    stock = DPOTrainer(model=load(tiny_model_b), ref_model=load(tiny_model), args=args("stock"),
                       train_dataset=datasets.Dataset.from_dict(rows), processing_class=tok)
    ours = CreamDPOTrainer(model=load(tiny_model_b), ref_model=load(tiny_model), args=args("ours"),
                           train_dataset=datasets.Dataset.from_dict({**rows, "weight": [1.0] * 4}),
                           processing_class=tok, data_collator=WeightedPreferenceCollator(tok.pad_token_id))
    batch_stock = stock.data_collator([stock.train_dataset[i] for i in range(4)])
    batch_ours = ours.data_collator([ours.train_dataset[i] for i in range(4)])
    assert torch.equal(batch_stock["input_ids"], batch_ours["input_ids"])
    with torch.no_grad():
        want = stock.compute_loss(stock.model, batch_stock).item()
        got = ours.compute_loss(ours.model, batch_ours).item()
    assert want != pytest.approx(math.log(2), abs=1e-2)  # policy != reference: a real margin
    assert got == pytest.approx(want, abs=1e-6)
    assert ours.reference_forwards == 1
    # and the logged margins agree with TRL's
    mode = "train" if ours.model.training else "eval"
    assert ours._metrics[mode]["rewards/margins"][-1] == pytest.approx(
        stock._metrics[mode]["rewards/margins"][-1], abs=1e-6)
    assert ours._metrics[mode]["rewards/accuracies"][-1] == stock._metrics[mode]["rewards/accuracies"][-1]
