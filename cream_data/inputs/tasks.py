"""The benchmark tasks both evaluations know (cream's own, ``cream_data.stages.evaluate``, and lm-evaluation-harness,
``cream_data.stages.harness``), and the one rule for a list of them. Kept apart from the evaluation stage so the
harness engine can use it without importing a stage.

>>> TASKS
('arc_easy', 'arc_challenge', 'openbookqa', 'siqa', 'gsm8k')
>>> task_problems(("gsm8k", "gsm8k"))
['tasks: gsm8k named more than once']
"""

from __future__ import annotations

from cream_data.inputs.prompts import BENCHMARKS

TASKS = tuple(BENCHMARKS)  # arc_easy, arc_challenge, openbookqa, siqa, gsm8k


def task_problems(tasks: tuple[str, ...]) -> list[str]:
    """What is wrong with a list of benchmark task names (none, unknown, repeated); the rule for both evaluations."""
    problems = []
    if not tasks:
        problems.append(f"tasks: got none, expected some of {', '.join(TASKS)}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        problems.append(f"tasks: unknown {', '.join(map(repr, unknown))}; known tasks: {', '.join(TASKS)}")
    twice = sorted({t for t in tasks if tasks.count(t) > 1})
    if twice:
        problems.append(f"tasks: {', '.join(twice)} named more than once")
    return problems
