"""A hostile probe of `cream` (issue #26's classes): about 200 commands a careless or hostile user would type, run
through the installed console script against real tiny fixtures, each judged "refused cleanly" (exit 2, one line
naming the problem, nothing changed on disk) or "right" (exit 0 and the right result).

    python bench/hostile_probe.py                    # every case; writes docs/results/hostile_probe.md
    python bench/hostile_probe.py --only key,done    # some classes
    python bench/hostile_probe.py --match "sample"   # cases whose name contains a text

The fixtures (tiny random Llama models, real outputs of every stage and a finished one-iteration run) are built once
under ``--world`` (default .cache/hostile-world, a few minutes) and reused. Each case runs in a folder of its own.
The totals by class are printed at the end and written with every case's verdict to ``--report``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hostile import cases_bounded, cases_contract, cases_done, cases_key, cases_paths, cases_replace  # noqa: E402
from bench.hostile import cases_role  # noqa: E402
from bench.hostile.core import judge  # noqa: E402
from bench.hostile.world import REPO, build  # noqa: E402

CLASSES = {
    "key": "a prompt_id / (prompt_id, response_idx) means one thing where tables meet",
    "done": "\"done\" is verified against the disk",
    "bounded": "every input is bounded (size, depth, numbers, context)",
    "role": "a model is what its role needs",
    "replace": "replace, then remove; never over what it did not make",
    "paths": "relative paths resolve against the config's folder",
    "contract": "flags, values and queries as users mistype them",
}
MODULES = (cases_key, cases_done, cases_bounded, cases_role, cases_replace, cases_paths, cases_contract)


def all_cases():
    return [c for m in MODULES for c in m.CASES]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, default=REPO / ".cache" / "hostile-world")
    ap.add_argument("--only", default="", help="comma-separated classes")
    ap.add_argument("--match", default="", help="only cases whose name contains this text")
    ap.add_argument("--report", type=Path, default=REPO / "docs" / "results" / "hostile_probe.md")
    ap.add_argument("--keep", action="store_true", help="keep each case's folder (under the world's cases/)")
    a = ap.parse_args(argv)
    only = set(filter(None, a.only.split(",")))
    cases = [c for c in all_cases() if (not only or c.klass in only) and a.match.lower() in c.name.lower()]
    print(f"building the fixtures under {a.world} (reused when present) ...", flush=True)
    world = build(a.world)
    rows, start = [], time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="probe-", dir=a.world))
    for i, case in enumerate(cases, 1):
        d = scratch / f"{i:03d}"
        d.mkdir()
        try:
            passed, why, r = judge(case, d, world)
        except Exception as e:  # noqa: BLE001 - a broken setup is reported, not fatal
            passed, why, r = False, f"probe setup failed: {type(e).__name__}: {e}", None
        why = why.replace(str(d), "CASE").replace(str(world.root), "WORLD")  # the report reads the same anywhere
        rows.append((case, passed, why, r.seconds if r else 0.0))
        print(f"[{i:3d}/{len(cases)}] {'PASS' if passed else 'FAIL'} {case.klass:8s} {case.name} — {why[:160]}",
              flush=True)
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)
    if not a.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    text = report(rows, time.monotonic() - start)
    print(text.split("\n## Cases")[0])
    if not a.match and not only:
        a.report.parent.mkdir(parents=True, exist_ok=True)
        a.report.write_text(text)
        print(f"report: {a.report}")
    return 0 if all(p for _, p, _, _ in rows) else 1


def report(rows, seconds: float) -> str:
    total, failed = Counter(), Counter()
    for case, passed, _, _ in rows:
        total[case.klass] += 1
        failed[case.klass] += not passed
    out = ["# Hostile probe", "", f"`python bench/hostile_probe.py`: {len(rows)} cases in {seconds / 60:.1f} min, "
           f"{sum(failed.values())} failed. In verdicts, WORLD is the fixtures' folder and CASE the case's own.", "",
           "| class | what it probes | cases | passed | failed |",
           "| --- | --- | ---: | ---: | ---: |"]
    for k, what in CLASSES.items():
        if total[k]:
            out.append(f"| {k} | {what} | {total[k]} | {total[k] - failed[k]} | {failed[k]} |")
    out += [f"| **all** | | **{len(rows)}** | **{len(rows) - sum(failed.values())}** | **{sum(failed.values())}** |",
            "", "## Cases", "", "| class | case | expected | verdict | s |", "| --- | --- | --- | --- | ---: |"]
    for case, passed, why, secs in rows:
        verdict = ("pass: " if passed else "**FAIL**: ") + why.replace("|", "\\|")[:200]
        out.append(f"| {case.klass} | {case.name.replace('|', '/')} | {case.expect} | {verdict} | {secs:.1f} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
