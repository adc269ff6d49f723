"""What one C per iteration does to training under Adam, on a real (tiny, random) Llama: the facts the CPU study's
design rests on (examples/study/README.md, "Reading it"; docs/algorithm.md, section 5).

The CREAM loss of a pair with log-ratio margin m is  C·(−log σ(βm)) + (1 − C)·(−log σ(−βm)),  whose gradient in m is
β(σ(βm) − C). At m = 0 (the policy equal to its reference, the start of every round) that is (2C − 1) times DPO's,
so with one C for every pair the whole gradient is DPO's times one constant, which Adam's step does not see; with a
C per pair the factors differ and it does. The two losses part once βm nears log(C / (1 − C)), where CREAM's has its
minimum. Each claim is checked against an independent computation: DPO's gradient pair by pair, plain DPO training,
and the closed-form minimum.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from cream_train.loss import cream_loss  # noqa: E402

BETA = 0.1
PAIRS = 4


@pytest.fixture(scope="module")
def setup(tiny_model):
    """The tiny model, and 4 pairs of random responses (token ids) to 4 random prompts."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    prompts = torch.randint(0, vocab, (PAIRS, 6), generator=g)
    chosen = torch.randint(0, vocab, (PAIRS, 5), generator=g)
    rejected = torch.randint(0, vocab, (PAIRS, 5), generator=g)
    return tiny_model, prompts, chosen, rejected


def _logps(model, prompts, responses):
    """log π(response | prompt) summed over the response tokens: one forward, the full log-softmax."""
    ids = torch.cat([prompts, responses], dim=1)
    logits = model(input_ids=ids).logits[:, prompts.shape[1] - 1: -1]
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, responses.unsqueeze(-1)).squeeze(-1).sum(-1)


def _fresh(path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.train()
    return model


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _train(setup, weight, *, steps: int, lr: float, eps: float = 1e-8):
    """``steps`` AdamW steps (weight decay 0, gradients clipped at norm 1, ε 1e-8: as cream train) on the 4 pairs
    with the CREAM loss at ``weight`` (C: a float, or one per pair; 1 = DPO). Returns (parameter change, final β·m
    per pair)."""
    path, prompts, chosen, rejected = setup
    policy, ref = _fresh(path), _fresh(path)
    with torch.no_grad():
        ref_c, ref_r = _logps(ref, prompts, chosen), _logps(ref, prompts, rejected)
    start = _flat(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0, eps=eps)
    w = torch.as_tensor(weight, dtype=torch.float32)
    for _ in range(steps):
        opt.zero_grad()
        out = cream_loss(_logps(policy, prompts, chosen), _logps(policy, prompts, rejected), ref_c, ref_r, w, BETA)
        out.losses.mean().backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
    with torch.no_grad():
        margin = BETA * ((_logps(policy, prompts, chosen) - ref_c) - (_logps(policy, prompts, rejected) - ref_r))
    return _flat(policy) - start, margin


def _grad(setup, weight, only: int | None = None) -> torch.Tensor:
    """The gradient of the mean CREAM loss at the reference (m = 0 on every pair); ``only``: of that pair alone."""
    path, prompts, chosen, rejected = setup
    policy = _fresh(path)
    sel = slice(None) if only is None else slice(only, only + 1)
    pc, pr = _logps(policy, prompts[sel], chosen[sel]), _logps(policy, prompts[sel], rejected[sel])
    w = torch.as_tensor(weight, dtype=torch.float32)
    cream_loss(pc, pr, pc.detach(), pr.detach(), w[sel] if w.ndim else w, BETA).losses.mean().backward()
    return torch.cat([p.grad.reshape(-1) for p in policy.parameters()])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_at_the_reference_the_gradient_is_dpos_scaled_by_2c_minus_1_pair_by_pair(setup):
    """∇L_cream = Σ_i (2C_i − 1)·∇L_dpo,i / n at m = 0, with DPO's gradient of each pair computed on its own."""
    per_pair = [_grad(setup, 1.0, only=i) for i in range(PAIRS)]  # each pair's DPO gradient (a batch of one)
    for c in (0.7, 0.3, [0.9, 0.6, 0.3, 0.5]):
        cs = [c] * PAIRS if isinstance(c, float) else c
        expected = sum((2 * ci - 1) * g for ci, g in zip(cs, per_pair)) / PAIRS
        assert _rel(_grad(setup, c), expected) < 1e-4, c
    assert float(_grad(setup, 0.5).abs().max()) == 0.0  # C = 1/2: no gradient at all


def test_one_c_for_every_pair_trains_as_dpo_under_adam_while_margins_are_small(setup):
    """Small steps (margins stay near 0): a constant C > 1/2 moves the model as DPO does, C < 1/2 the opposite way,
    C = 1/2 not at all; a C per pair does not (its factors differ between pairs). What is left of the difference is
    Adam's ε (1e-8 against this tiny model's gradients, many of them near 1e-8): with ε 1e-12 it nearly vanishes."""
    dpo, m_dpo = _train(setup, 1.0, steps=3, lr=1e-6)
    assert float(dpo.norm()) > 0 and float(m_dpo.abs().max()) < 1e-2  # it moved; the margins stayed small
    per_prompt, _ = _train(setup, [0.9, 0.6, 0.3, 0.5], steps=3, lr=1e-6)
    assert _rel(per_prompt, dpo) > 1.0
    same, _ = _train(setup, 0.7, steps=3, lr=1e-6)
    opposite, _ = _train(setup, 0.3, steps=3, lr=1e-6)
    assert _rel(same, dpo) < 0.1 and _rel(opposite, -dpo) < 0.1
    still, _ = _train(setup, 0.5, steps=3, lr=1e-6)
    assert float(still.abs().max()) == 0.0
    dpo, _ = _train(setup, 1.0, steps=3, lr=1e-6, eps=1e-12)
    same, _ = _train(setup, 0.7, steps=3, lr=1e-6, eps=1e-12)
    opposite, _ = _train(setup, 0.3, steps=3, lr=1e-6, eps=1e-12)
    assert _rel(same, dpo) < 0.01 and _rel(opposite, -dpo) < 0.03


def test_with_large_margins_one_c_parts_from_dpo_at_its_minimum(setup):
    """Trained long enough, CREAM with one C settles each pair's βm near log(C / (1 − C)), the minimum of its loss
    (conservative DPO), while DPO's margins grow past it."""
    c = 0.7
    target = math.log(c / (1 - c))
    _, m_cream = _train(setup, c, steps=60, lr=3e-3)
    _, m_dpo = _train(setup, 1.0, steps=60, lr=3e-3)
    assert float((m_cream - target).abs().max()) < 0.25 * target, (m_cream, target)
    assert float(m_dpo.min()) > 2 * target, (m_dpo, target)
