"""Exact nucleus (top-p) sampling without sorting the whole vocabulary.

The nucleus of a next-token distribution ``p`` (after the temperature) is the set transformers' ``TopPLogitsWarper``
keeps (``min_tokens_to_keep = 1``): with the tokens ranked by score, highest first, and ``E_r`` the probability mass
ranked strictly above token ``r``,

    token r is kept  <=>  E_r < top_p          (the best token always: E_1 = 0)

(the warper phrases it from the bottom: it removes a token when the ascending cumulative mass up to and including it
is ``<= 1 - top_p``). The draw is then ``p`` renormalised over the kept set.

Sorting 49,152 scores per row every step costs far more than the rest of the sampling. Almost all of the mass of a
language model's next-token distribution sits in a few dozen tokens, so :func:`nucleus` first takes the ``k`` best
(``torch.topk``, one pass) and decides from them alone when it can do so exactly:

- the boundary lies inside the top ``k`` (the mass of the kept tokens reaches ``top_p`` before rank ``k``);
- no ``E_r`` lies within :data:`MARGIN` of ``top_p`` (so float rounding in the warper's own sums, float32, could not
  flip a token), and the last kept token does not tie the first dropped one (the warper's choice among ties depends on
  its sort's order).

Rows that miss the first condition are retried with a ``k`` :data:`GROWTH` times larger (at most :data:`MAX_K`);
rows that miss the second, or still the first, get the warper's own computation over the fully sorted row
(:func:`sorted_keep`). The kept set is therefore the warper's, token for token; tests/test_decode.py checks it on
1,000 random rows against ``TopPLogitsWarper`` and checks the draws with a chi-square test. At the demo's settings
(SmolLM2-135M, T 0.8, top-p 0.95) 0.4 % of rows needed the full sort; 32 rows took 5.6 ms a step instead of the
warper's sort and a full-vocabulary multinomial's 163 ms (one CPU thread).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FIRST_K = 64       # candidates taken first: a chat model's nucleus at top_p 0.95 rarely holds more
GROWTH = 8         # a row whose nucleus is wider than k is retried with k x GROWTH
MAX_K = 4096       # beyond this a full sort of the row is as cheap
MARGIN = 1e-5      # |E_r - top_p| closer than this: decided by the warper's own float32 arithmetic


@dataclass(frozen=True)
class Nucleus:
    """Each row's kept tokens, most probable first: ``index[b, :count[b]]`` with probabilities ``prob`` (zero past
    ``count[b]``, unnormalised: ``p`` under the temperature, not renormalised over the kept set)."""

    index: torch.Tensor  # [B, W] token ids
    prob: torch.Tensor   # [B, W] float64
    count: torch.Tensor  # [B] kept tokens per row


def scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The warper's scores: float32 logits divided by the temperature (as ``TemperatureLogitsWarper`` does)."""
    scores = logits.float()
    return scores if temperature == 1.0 else scores / temperature


def sorted_keep(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """The kept mask ``[B, V]`` computed the warper's way: an ascending sort, a float32 softmax and cumulative sum,
    tokens removed where the cumulative mass is ``<= 1 - top_p``, the best token always kept."""
    order, keep_sorted = _ascending_keep(scores, top_p)
    return keep_sorted.scatter(1, order, keep_sorted)


def _ascending_keep(scores: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The warper's ascending order of each row and which of its positions it keeps (a suffix of the order)."""
    ascending, order = torch.sort(scores, descending=False)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[..., -1:] = False
    return order, ~remove


def nucleus(scores: torch.Tensor, top_p: float, *, first_k: int = FIRST_K) -> Nucleus:
    """The kept set of every row of ``scores`` (``[B, V]``, already divided by the temperature), as
    ``TopPLogitsWarper(top_p)`` keeps it, found from the top ``k`` scores where that decides it exactly."""
    rows, vocab = scores.shape
    log_total = torch.logsumexp(scores, dim=-1).double()
    blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (rows, index, prob, count)
    todo, ambiguous = torch.arange(rows, device=scores.device), []
    k = min(first_k, vocab)
    while todo.numel() and k < vocab and k <= MAX_K:
        values, index = torch.topk(scores[todo], k, dim=-1)
        prob = (values.double() - log_total[todo, None]).exp()
        above = prob.cumsum(dim=-1) - prob  # E_r: the mass ranked strictly above each candidate
        count = (above < top_p).sum(dim=-1)  # kept candidates (E_r grows with r)
        inside = count < k  # the first dropped token is a candidate too
        last, first_out = (count - 1)[:, None], count.clamp(max=k - 1)[:, None]
        near = ((above.gather(1, last) - top_p).abs() < MARGIN) | ((above.gather(1, first_out) - top_p).abs() < MARGIN)
        tie = values.gather(1, last) == values.gather(1, first_out)
        decided = inside & ~(near | tie)[:, 0]
        if decided.any():
            blocks.append((todo[decided], index[decided], prob[decided], count[decided]))
        ambiguous.append(todo[inside & ~decided])
        todo = todo[~inside]
        k *= GROWTH
    rest = torch.cat([*ambiguous, todo]).sort().values  # rows in order
    if rest.numel():
        blocks.append(_full_sort(scores[rest], log_total[rest], top_p, rest))
    return _packed(blocks, rows, scores.device)


def _full_sort(scores: torch.Tensor, log_total: torch.Tensor, top_p: float, rows: torch.Tensor):
    """The warper's computation on some rows, as a block ``(rows, index, prob, count)`` with the kept tokens first,
    most probable first."""
    order, keep_sorted = _ascending_keep(scores, top_p)
    count = keep_sorted.sum(dim=-1)
    width = int(count.max())
    order = order.flip(-1)[:, :width]  # the kept tokens of a row are the top of its order: count[b] of them
    prob = (scores.gather(1, order).double() - log_total[:, None]).exp()
    return rows, order, prob, count


def _packed(blocks, rows: int, device) -> Nucleus:
    """One ``Nucleus`` from the blocks, in row order; padding repeats a row's best token with probability 0."""
    if len(blocks) == 1 and blocks[0][0].numel() == rows:  # every row decided at once: rows in order
        _, index, prob, count = blocks[0]
        width = int(count.max())
        index, prob = index[:, :width], prob[:, :width]
    else:
        width = max(int(b[3].max()) for b in blocks)
        index = torch.zeros((rows, width), dtype=torch.long, device=device)
        prob = torch.zeros((rows, width), dtype=torch.float64, device=device)
        count = torch.zeros(rows, dtype=torch.long, device=device)
        for where, b_index, b_prob, b_count in blocks:
            w = min(width, b_index.shape[1])
            index[where, :w], prob[where, :w], count[where] = b_index[:, :w], b_prob[:, :w], b_count
    valid = torch.arange(width, device=device)[None, :] < count[:, None]
    return Nucleus(torch.where(valid, index, index[:, :1]), prob.masked_fill(~valid, 0.0), count)


def keep_mask(scores: torch.Tensor, top_p: float, *, first_k: int = FIRST_K) -> torch.Tensor:
    """The kept set of :func:`nucleus` as a ``[B, V]`` mask (for tests and checks)."""
    kept = nucleus(scores, top_p, first_k=first_k)
    hits = torch.zeros(scores.shape, dtype=torch.long, device=scores.device)
    valid = torch.arange(kept.index.shape[1], device=scores.device)[None, :] < kept.count[:, None]
    return hits.scatter_add(1, kept.index, valid.long()) > 0


def draw(scores: torch.Tensor, top_p: float, uniform: torch.Tensor | torch.Generator | None) -> torch.Tensor:
    """One token per row from ``softmax(scores)`` restricted to the nucleus (``top_p >= 1``: the whole softmax), by
    inverting each row's cumulative distribution at its own uniform number.

    ``uniform`` holds one number in [0, 1) per row (float64), or is a generator (or ``None``: torch's global one) to
    draw them from. One number per row, whatever the width of the nucleus: a row's token depends only on its own
    scores and its own number, so float noise in another row (a thread count that sums in another order, a nucleus
    one token wider) cannot shift the random numbers of the rest of the batch, as a draw whose consumption follows
    the kept width (``torch.multinomial`` over ``[rows, width]``) would."""
    if not isinstance(uniform, torch.Tensor):
        uniform = torch.rand(scores.shape[0], generator=uniform, dtype=torch.float64, device=scores.device)
    if top_p >= 1.0:
        cumulative = (scores.double() - torch.logsumexp(scores.double(), dim=-1, keepdim=True)).exp().cumsum(dim=-1)
        count, index = torch.full_like(uniform, scores.shape[1], dtype=torch.long), None
    else:
        kept = nucleus(scores, top_p)
        cumulative, count, index = kept.prob.cumsum(dim=-1), kept.count, kept.index
    target = (uniform * cumulative[:, -1])[:, None]  # the kept mass is the last cumulative value (zeros past count)
    pick = torch.searchsorted(cumulative, target, right=True).clamp(max=(count - 1)[:, None])
    return pick[:, 0] if index is None else index.gather(1, pick)[:, 0]
