"""The study's plots: average and per-task accuracy per method and model, consistency per iteration, reward
quality against the oracle (matplotlib, Agg backend, imported only here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cream_data.reports.figures import new_figure, save_png

COLORS = {"srlm": "#8172B2", "cream-no-rc": "#DD8452", "cream-avg": "#937860", "cream": "#4C72B0",
          "cream-prompt": "#64B5CD", "oracle": "#55A868"}


def method_color(label: str, default: str | None = None) -> str | None:
    """The colour of a run's method: a study with several seeds labels its runs ``method (seed N)``, and every seed
    of a method gets the method's colour.

    >>> method_color("cream (seed 2)") == method_color("cream") == COLORS["cream"]
    True
    """
    return COLORS.get(label.split(" (seed ")[0], default)


def plot_accuracy(study: dict, path: Path) -> Path:
    """Average accuracy per model, one line per method, 95 % intervals as bars; shared models drawn once."""
    fig, (ax,) = new_figure(3.8)
    shared = set(study["shared_models"])
    offsets = np.linspace(-0.12, 0.12, len(study["methods"]))
    for off, m in zip(offsets, study["methods"]):
        rows = [r for r in study["accuracy"][m] if r["k"] is not None and r["average"]["accuracy"] is not None]
        x = np.array([r["k"] for r in rows], dtype=float) + np.where([r["k"] in shared for r in rows], 0, off)
        y = np.array([r["average"]["accuracy"] for r in rows]) * 100
        lo = y - np.array([r["average"]["ci_low"] for r in rows]) * 100
        hi = np.array([r["average"]["ci_high"] for r in rows]) * 100 - y
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, linewidth=1.6, label=m, color=method_color(m))
    ks = sorted({r["k"] for rows in study["accuracy"].values() for r in rows if r["k"] is not None})
    ax.set_xticks(ks, [f"M{k}" + (" (shared)" if k in shared else "") for k in ks])
    ax.set(title="Average accuracy over the eval tasks (95% CI)", xlabel="model", ylabel="accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def plot_tasks(study: dict, path: Path) -> Path:
    """Accuracy per task of each method's last model, next to the shared base model."""
    tasks, methods = study["tasks"], study["methods"]
    fig, (ax,) = new_figure(3.8)
    groups = []
    base_k = max(study["shared_models"]) if study["shared_models"] else None
    if base_k is not None:
        row = next(r for r in study["accuracy"][methods[0]] if r["k"] == base_k)
        groups.append((f"M{base_k} (shared)", row, "#999999"))
    for m in methods:
        rows = [r for r in study["accuracy"][m] if r["k"] is not None]
        if rows:
            last = max(rows, key=lambda r: r["k"])
            groups.append((f"{m} M{last['k']}", last, method_color(m)))
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(tasks))
    for i, (label, row, color) in enumerate(groups):
        y = np.array([row["tasks"].get(t, {}).get("accuracy") or 0.0 for t in tasks]) * 100
        lo = y - np.array([row["tasks"].get(t, {}).get("ci_low") or 0.0 for t in tasks]) * 100
        hi = np.array([row["tasks"].get(t, {}).get("ci_high") or 0.0 for t in tasks]) * 100 - y
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, y, width, yerr=[lo, hi], capsize=2, label=label,
               color=color, alpha=0.85)
    ax.set_xticks(x, tasks)
    ax.set(title="Accuracy per task, last model of each method (95% Wilson CI)", ylabel="accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, ncol=2)
    return save_png(fig, path)


def plot_consistency(study: dict, path: Path) -> Path:
    """C per prompt, one box per method and iteration."""
    fig, (ax,) = new_figure(3.8)
    data, labels, colors = [], [], []
    for m in study["methods"]:
        for t, vals in sorted(study["c_values"][m].items(), key=lambda kv: int(kv[0])):
            data.append(np.array(vals))
            labels.append(f"{m}\nM{t} vs M{int(t) - 1}")
            colors.append(method_color(m, "#4C72B0"))
    if data:
        box = ax.boxplot(data, showmeans=True, showfliers=False, widths=0.55, patch_artist=True,
                         meanprops={"marker": "D", "markerfacecolor": "black", "markeredgecolor": "black"})
        for patch, c in zip(box["boxes"], colors):
            patch.set(facecolor=c, alpha=0.5)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.set(title="C = (τ+1)/2 between consecutive models (◆ mean)", ylabel="C",
           ylim=(-0.05, 1.05))
    ax.grid(alpha=0.3, axis="y")
    return save_png(fig, path)


def plot_reward_quality(study: dict, path: Path) -> Path:
    """Win / tie / loss shares of each method's pairs against the oracle, per iteration."""
    fig, (ax,) = new_figure(3.8)
    labels, parts = [], []
    for m in study["methods"]:
        for q in study["reward_quality"][m]:
            n = q["wins"] + q["losses"] + q["both_right"] + q["both_wrong"]
            if n:
                labels.append(f"{m}\niter {q['iteration']}")
                parts.append([q["wins"] / n, (q["both_right"] + q["both_wrong"]) / n, q["losses"] / n])
    if parts:
        p = np.array(parts) * 100
        x = np.arange(len(labels))
        ax.bar(x, p[:, 0], color="#55A868", label="chosen right, rejected wrong")
        ax.bar(x, p[:, 1], bottom=p[:, 0], color="#CCCCCC", label="tie (both right or both wrong)")
        ax.bar(x, p[:, 2], bottom=p[:, 0] + p[:, 1], color="#C44E52", label="chosen wrong, rejected right")
        ax.set_xticks(x, labels, fontsize=7)
    ax.set(title="Self-rewarded pairs judged by the oracle", ylabel="% of pairs with a reference", ylim=(0, 130),
           yticks=range(0, 101, 20))
    ax.legend(fontsize=7, loc="upper center", ncol=3, frameon=False)  # in the headroom above the bars
    return save_png(fig, path)
