"""The hf engine's decode loop (cream_data/engines/decode.py) and its exact top-p (cream_data/engines/top_p.py):
the kept set is transformers' TopPLogitsWarper's, the draws follow the renormalised nucleus, greedy decoding gives
``model.generate``'s tokens, and sampling is deterministic per batch with stop tokens and the length cap handled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from transformers.generation.logits_process import TopPLogitsWarper

from cream_data.engines import models, top_p
from cream_data.engines.base import GenerationParams
from cream_data.engines.decode import DecodeBatch, decode, supports
from cream_data.engines.hf_sample import HfSampler, batch_seed
from tests.support.tables import prompts_table


@pytest.fixture(scope="module")
def engine(tiny_model):
    return HfSampler.load(models.resolve(str(tiny_model)))


@pytest.fixture(scope="module")
def sharp(tiny_model):
    """The tiny model with its weights (norms aside) x 8: the random model's greedy rows otherwise repeat one token,
    which no comparison of tokens could fail on; sharper logits make every row its own."""
    sampler = HfSampler.load(models.resolve(str(tiny_model)))
    with torch.no_grad():
        for name, weight in sampler.model.named_parameters():
            if "norm" not in name:
                weight.mul_(8)
    return sampler


@pytest.fixture(scope="module")
def prompt_ids(engine):
    """Templated prompts of different lengths (so a batch is left-padded), one much longer than the rest."""
    convs = prompts_table().column("prompt").to_pylist()[:4]
    convs.append([{"role": "user", "content": "Explain, with care and at length, " * 6 + "why the sky is blue."}])
    ids = engine.encode(convs)
    assert len({len(x) for x in ids}) >= 3
    return ids


def warper_keeps(scores: torch.Tensor, p: float) -> torch.Tensor:
    return TopPLogitsWarper(p)(None, scores.clone()) != -torch.inf


# ---------------------------------------------------------------------------- exact top-p
def random_rows(seed: int = 0, rows: int = 1000, vocab: int = 2048) -> list[tuple[torch.Tensor, float, float]]:
    """(logits, temperature, top_p) rows: flat and peaked, some with rounded (tied) logits, various settings."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(rows):
        spread = [0.05, 0.5, 2.0, 5.0, 12.0][i % 5]
        logits = torch.randn(vocab, generator=g) * spread
        if i % 4 == 0:  # ties, some across the boundary
            logits = torch.round(logits * 2) / 2
        if i % 9 == 0:  # one dominant token
            logits[int(torch.randint(vocab, (1,), generator=g))] += 20
        out.append((logits, [0.3, 0.7, 0.8, 1.0, 1.5, 2.0][i % 6], [0.95, 0.5, 1.0, 0.9, 0.99, 0.2, 0.95][i % 7]))
    return out


def test_kept_set_equals_the_warpers_on_1000_random_rows():
    rows = random_rows()
    wide = narrow = 0
    for settings in {(t, p) for _, t, p in rows}:
        batch = torch.stack([x for x, t, p in rows if (t, p) == settings])
        scores = top_p.scaled(batch, settings[0])
        want = warper_keeps(scores, settings[1])
        got = top_p.keep_mask(scores, settings[1], first_k=16)
        assert torch.equal(got, want), settings
        kept = want.sum(-1)
        narrow += int((kept < 16).sum())  # decidable from the first 16 candidates
        wide += int((kept > 1024).sum())  # beyond every top-k round (16, 128, 1024): the full-sort fallback
    assert narrow > 100 and wide > 100  # both paths were exercised


def test_kept_set_at_the_boundary_of_a_tie_follows_the_warper():
    scores = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0, -1.0] + [-9.0] * 60])
    for p in (0.5, 0.8, 0.9, 0.95):
        assert torch.equal(top_p.keep_mask(scores, p, first_k=4), warper_keeps(scores, p))


def test_draws_follow_the_renormalised_nucleus_chi_square():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1000, generator=g) * 3
    temperature, p = 0.7, 0.9
    scores = top_p.scaled(logits[None], temperature)
    keep = warper_keeps(scores, p)[0]
    expected = torch.where(keep, scores[0].softmax(-1).double(), 0.0)
    expected = (expected / expected.sum()).numpy()
    assert 5 < keep.sum() < 64  # the top-k path decides it
    gen = torch.Generator().manual_seed(2)
    draws = torch.cat([top_p.draw(scores.expand(2000, -1), p, gen) for _ in range(10)]).numpy()
    counts = np.bincount(draws, minlength=1000)
    assert counts[~keep.numpy()].sum() == 0  # nothing outside the nucleus
    inside = keep.numpy()
    stat, pvalue = chisquare(counts[inside], expected[inside] * len(draws))
    assert pvalue > 1e-3, (stat, pvalue)


def test_top_p_one_draws_from_the_whole_softmax():
    scores = torch.tensor([[0.0, np.log(3.0)]]).expand(20000, -1)
    draws = top_p.draw(scores, 1.0, torch.Generator().manual_seed(0))
    assert abs(draws.float().mean().item() - 0.75) < 0.015


def test_a_rows_draw_depends_only_on_its_own_scores_and_number():
    """Widening one row's nucleus (its scores flattened) changes no other row's token: each row inverts its own
    cumulative distribution at its own number, so one row's float noise cannot shift the others' random numbers."""
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(64, 500, generator=g) * 4
    uniform = torch.rand(64, generator=g, dtype=torch.float64)
    wider = scores.clone()
    wider[5] = wider[5] / 50  # nearly flat: a nucleus of hundreds of tokens, the batch's widest by far
    assert int(top_p.nucleus(wider, 0.9).count.max()) > 4 * int(top_p.nucleus(scores, 0.9).count.max())
    a, b = top_p.draw(scores, 0.9, uniform), top_p.draw(wider, 0.9, uniform)
    same = torch.arange(64) != 5
    assert torch.equal(a[same], b[same])
    # and the inversion itself, by hand on row 0: the first kept token whose cumulative mass exceeds u x kept mass
    keep = warper_keeps(scores[:1], 0.9)[0]
    p = torch.where(keep, scores[0].double().softmax(-1), 0.0)
    order = torch.argsort(p, descending=True, stable=True)
    cumulative = p[order].cumsum(0)
    assert int(order[int((cumulative > uniform[0] * cumulative[-1]).nonzero()[0])]) == int(a[0])


# ---------------------------------------------------------------------------- the decode loop
def test_the_tiny_llama_runs_through_the_loop(engine):
    assert supports(engine.model) and engine.uses_loop


def test_greedy_equals_generate_token_for_token(sharp, prompt_ids):
    params = GenerationParams(0.0, 1.0, 24)
    ours = sharp._decode_rows(prompt_ids, [0] * len(prompt_ids), 2, params)
    theirs = sharp._generate_rows(prompt_ids, [0] * len(prompt_ids), 2, params)
    assert ours == theirs
    assert len({tuple(t) for t, _, _ in ours}) == len(prompt_ids)  # every prompt its own continuation
    assert all(n == 24 for _, reason, n in ours if reason == "length")


def test_dropping_ended_rows_gives_the_same_tokens(sharp, prompt_ids):
    params = GenerationParams(0.0, 1.0, 20)
    free = decode(sharp.model, DecodeBatch(prompt_ids, 1, params, frozenset({-1}), sharp.pad_id, 0))
    stops = frozenset(row[3 + 3 * i] for i, row in enumerate(free[:4]))  # rows 0-3 end by step 13; row 4 may run
    batch = DecodeBatch(prompt_ids, 1, params, stops, sharp.pad_id, 0)
    dropped, kept = decode(sharp.model, batch), decode(sharp.model, batch, drop_finished=False)
    assert dropped == kept
    for row, full in zip(dropped, free):  # each row: its free run, cut after its first stop token
        first = next((i for i, t in enumerate(full) if t in stops), len(full) - 1)
        assert row == full[:first + 1]
    assert len({len(r) for r in dropped}) >= 3  # rows ended at different steps


def test_sampling_is_deterministic_per_batch_and_seeded(engine, prompt_ids):
    params = GenerationParams(1.0, 0.95, 12)
    a = engine._decode_rows(prompt_ids, [1, 2, 3, 4, 5], 3, params)
    assert a == engine._decode_rows(prompt_ids, [1, 2, 3, 4, 5], 3, params)
    assert a != engine._decode_rows(prompt_ids, [1, 2, 3, 4, 6], 3, params)
    assert len(a) == 15 and len({tuple(t) for t, _, _ in a}) == 15  # T = 1 on a random model: every row differs
    assert all((reason, n) == ("length", 12) and len(t) == 12 for t, reason, n in a)


def test_sampled_tokens_do_not_depend_on_the_thread_count(engine, prompt_ids):
    """A sharded or srun task may run with fewer threads than the one-process run; its matrix products sum in another
    order, and the same batch must still give the same responses (to within a draw that lands on float noise, which
    these 60 rows x 16 steps do not)."""
    params = GenerationParams(0.8, 0.95, 16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = engine._decode_rows(prompt_ids, [1, 2, 3, 4, 5], 12, params)
        torch.set_num_threads(max(2, threads))
        more = engine._decode_rows(prompt_ids, [1, 2, 3, 4, 5], 12, params)
    finally:
        torch.set_num_threads(threads)
    assert one == more


def test_stop_tokens_end_a_sampled_row_and_are_counted(engine, prompt_ids):
    """A token row 1 samples mid-way made the stop token: the same seeded batch then ends row 1 right there."""
    params = GenerationParams(1.0, 0.95, 16)
    seed = batch_seed([7, 8])
    free = decode(engine.model, DecodeBatch(prompt_ids[:2], 2, params, frozenset({-1}), engine.pad_id, seed))
    assert all(len(r) == 16 for r in free)
    stop = free[1][5]  # row 1 samples it at step 5 (maybe earlier too)
    got = decode(engine.model, DecodeBatch(prompt_ids[:2], 2, params, frozenset({stop}), engine.pad_id, seed))
    first = free[1].index(stop)
    assert got[1] == free[1][:first + 1]
    # Through the engine: the row's content, reason and count (the stop token counted, not in the text).
    rows = HfSampler(engine.model, engine.tokenizer, stop_token_ids=[stop])._decode_rows(prompt_ids[:2], [7, 8], 2,
                                                                                         params)
    assert rows[1] == (free[1][:first], "stop", first + 1)


def test_generate_fallback_is_used_for_models_the_loop_cannot_run(engine, prompt_ids):
    fallback = HfSampler(engine.model, engine.tokenizer)
    fallback.uses_loop = False
    params = GenerationParams(0.0, 1.0, 8)
    convs = prompts_table().column("prompt").to_pylist()[:2]
    assert fallback.generate(convs, [0, 1], 2, params) == engine.generate(convs, [0, 1], 2, params)


# ---------------------------------------------------------------------------- eval batching
def examples(task: str, convs: list):
    """A task's examples from conversations (ids ``task-i``, gold answer A)."""
    from cream_data.stages.evaluate import Examples

    return Examples(task, [f"{task}-{i}" for i in range(len(convs))], convs, ["A"] * len(convs))


def test_task_groups_pack_consecutive_small_tasks():
    from cream_data.stages.evaluate import task_groups

    conv = [{"role": "user", "content": "q"}]
    tasks = [examples(t, [conv] * k) for t, k in (("a", 6), ("b", 6), ("c", 6), ("d", 40), ("e", 3), ("f", 2))]
    groups = task_groups(tasks, 16)  # at most 32 questions a group; a larger task alone
    assert [[ex.task for ex in g] for g in groups] == [["a", "b", "c"], ["d"], ["e", "f"]]


def test_grouped_eval_answers_equal_per_task_answers_and_a_resume_runs_the_same_batches(sharp):
    from cream_data.stages.eval_config import EvalConfig
    from cream_data.stages.evaluate import generate_answers

    convs = prompts_table().column("prompt").to_pylist()
    tasks = [examples("arc_easy", convs[:3]), examples("siqa", convs[3:5]), examples("gsm8k", convs[5:7])]
    cfg = EvalConfig(batch_size=4, max_new_tokens=10)
    params = GenerationParams(0.0, 1.0, 10)
    calls = []

    class Counting:
        prompt_lengths = staticmethod(sharp.prompt_lengths)

        def generate(self, prompts, seeds, n, params):
            calls.append(len(prompts))
            return sharp.generate(prompts, seeds, n, params)

    grouped = {ex.task: r for ex, r, *_ in generate_answers(Counting(), tasks, set(), params, cfg)}
    assert calls == [4, 3]  # 7 questions of 3 tasks in one group (<= 8): batches of 4 across tasks
    alone = {ex.task: r for task in tasks for ex, r, *_ in generate_answers(sharp, [task], set(), params, cfg)}
    assert grouped == alone and len({r for rs in grouped.values() for r in rs}) == 7
    resumed = list(generate_answers(sharp, tasks, {"arc_easy"}, params, cfg))
    assert [ex.task for ex, *_ in resumed] == ["siqa", "gsm8k"]
    assert {ex.task: r for ex, r, *_ in resumed} == {t: grouped[t] for t in ("siqa", "gsm8k")}
    tokens = sum(t for *_, t, _, _ in generate_answers(sharp, tasks, set(), params, cfg))
    assert tokens == sum(g[0].n_tokens for g in sharp.generate(
        [c for ex in tasks for c in ex.prompts], [0] * 7, 1, params))
