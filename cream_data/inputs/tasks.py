"""The benchmark tasks both evaluations know (cream's own, ``cream_data.stages.evaluate``, and lm-evaluation-harness,
``cream_data.stages.harness``), and the one rule for a list of them. The names come from :mod:`cream_data.vocab`;
:data:`cream_data.inputs.prompts.BENCHMARKS` maps each to its files and Hub ids.

>>> TASKS
('arc_easy', 'arc_challenge', 'openbookqa', 'siqa', 'gsm8k')
>>> task_problems(("gsm8k", "gsm8k"))
['tasks: gsm8k named more than once']
"""

from __future__ import annotations

from cream_data.settings import shown
from cream_data.vocab import TASKS

__all__ = ["TASKS", "task_problems"]


def task_problems(tasks: tuple[str, ...]) -> list[str]:
    """What is wrong with a list of benchmark task names (none, unknown, repeated); the rule for both evaluations."""
    problems = []
    if not tasks:
        problems.append(f"tasks: got none, expected some of {', '.join(TASKS)}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        problems.append(f"tasks: unknown {shown(', '.join(map(repr, unknown)), quote=False)}; known tasks: "
                        f"{', '.join(TASKS)}")
    twice = sorted({t for t in tasks if tasks.count(t) > 1})
    if twice:
        problems.append(f"tasks: {', '.join(twice)} named more than once")
    return problems
