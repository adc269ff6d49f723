"""Small statistics shared by pairing, reports, the study and the dataset card: one place for each.

Pure (numpy and scipy only), so every layer may use it, ``rewards/`` included.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal


def finite_or_none(x) -> float | None:
    """``float(x)``, or None where it is NaN or ±inf (JSON has no NaN).

    >>> finite_or_none(np.float64(2.5)), finite_or_none(float("nan"))
    (2.5, None)
    """
    x = float(x)
    return x if math.isfinite(x) else None


def json_safe(x, other=None):
    """NaN/±inf → None anywhere inside nested dicts, lists and tuples (tuples become lists): strict JSON.
    ``other``, when given, converts every value that is not a float, dict, list, tuple, str, int, bool or None.

    >>> json_safe({"a": [1.0, float("inf")], "b": (float("nan"), "x")})
    {'a': [1.0, None], 'b': [None, 'x']}
    """
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v, other) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v, other) for v in x]
    if other is None or isinstance(x, (str, int, bool)) or x is None:
        return x
    return other(x)


def describe(x) -> dict:
    """n, mean, median, std (ddof = 0), min, max of the finite values; None where undefined.

    >>> describe([1.0, 3.0, float("nan")])
    {'n': 2, 'mean': 2.0, 'median': 2.0, 'std': 1.0, 'min': 1.0, 'max': 3.0}
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0, "mean": None, "median": None, "std": None, "min": None, "max": None}
    return {"n": int(x.size), "mean": float(x.mean()), "median": float(np.median(x)), "std": float(x.std()),
            "min": float(x.min()), "max": float(x.max())}


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of the proportion ``k / n`` (scipy's ``binomtest(k, n).proportion_ci(method=
    "wilson")``); (NaN, NaN) when n = 0.

    Hand-worked, k = 3, n = 4, z = 1.96: centre (0.75 + z²/8) / (1 + z²/4) = 0.6275, half-width
    z / (1 + z²/4) · sqrt(0.75 · 0.25 / 4 + z²/64) = 0.3269: [0.3006, 0.9544].

    >>> [round(v, 4) for v in wilson(3, 4)]
    [0.3006, 0.9544]
    """
    if n == 0:
        return (math.nan, math.nan)
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))
