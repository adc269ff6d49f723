"""Scaffolding the tests share, and the benchmarks in bench/ with them: builders of tiny models, tables and run
configs, baselines the engines are checked against, and helpers for running the `cream` command. Nothing here is
part of cream itself; pytest's fixtures stay in tests/conftest.py, which builds on these modules.

The modules, by theme: :mod:`tests.support.cli` (the installed console script and its one-line errors),
:mod:`tests.support.models` (tiny random models and the naive scorers), :mod:`tests.support.runs` (one tiny
`cream run` config), :mod:`tests.support.processes` (the processes of a run), :mod:`tests.support.tables` and the
table builders of one subject each (:mod:`~tests.support.pairing`, :mod:`~tests.support.published`,
:mod:`~tests.support.reports`, :mod:`~tests.support.answers`, :mod:`~tests.support.training`,
:mod:`~tests.support.benchmarks`), and :mod:`tests.support.commands` (stage command lines parsed back).
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout's root
DEMO_DATA = REPO / "examples" / "data"  # the demo's SFT examples and prompts: every tiny run trains on them
