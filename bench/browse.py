"""`cream browse` on 10,000 pairs: the page's size and how fast it opens in headless Chromium, against an eager page.

    python bench/browse.py [--pairs 10000] [--repeats 3] [--keep DIR]

A synthetic run (one iteration: ``--pairs`` prompts × 4 responses of 300–800 characters, ``current`` and
``previous`` scores, one pair per prompt, consistent as `cream run` writes them) is written, then

- ``cream browse`` builds the page (in process: read the tables, build the records, write the file);
- the page is opened ``--repeats`` times in headless Chromium (``--dump-dom``, then ``--screenshot``); the page
  writes ``performance.now()`` at the moment its first rows are in the DOM (navigation start → HTML parsed, data
  parsed, filtered, sorted, first batch drawn and laid out) into ``body[data-first-rows-ms]``, read from the
  dumped DOM; the wall time of each Chromium process is measured around it;
- the eager baseline is the same page and data with the batch size set past the number of pairs: every row is
  drawn at once, as a page without lazy rendering would.

Medians of ``--repeats``. Chromium: ``chromium``, ``chromium-browser`` or ``google-chrome`` on PATH.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import schemas  # noqa: E402
from cream_data.reports.browse import browse  # noqa: E402
from cream_data.tables.io import write_table  # noqa: E402
from tests.support.published import conv, make_tables  # noqa: E402

WORDS = ("the model answer step first then total number because so we need each row question value result "
         "check count add multiply divide final therefore garden apples tulips train speed hours").split()
LAZY, EAGER = "const BATCH = 20;", "const BATCH = 1e9;"


def long_text(rng: np.random.Generator) -> str:
    """A response of 300–800 characters of words, in lines."""
    target, words = int(rng.integers(300, 801)), []
    while sum(len(w) + 1 for w in words) < target:
        words.append(str(rng.choice(WORDS)))
        if rng.random() < 0.08:
            words[-1] += ".\n"
    return " ".join(words)[:target]


def make_run(root: Path, pairs: int, seed: int = 0) -> None:
    """A one-iteration run of ``pairs`` prompts with long texts (tests/support/published.py's tables, re-texted)."""
    rng = np.random.default_rng(seed)
    tables = make_tables(1, pairs, seed=seed)
    resp = tables["responses"].to_pylist()
    texts = {}
    for r in resp:
        r["response"] = texts[(r["prompt_id"], r["response_idx"])] = long_text(rng)
    prefs = tables["preferences"].to_pylist()
    for p in prefs:
        p["prompt"] = conv("user", f"{p['prompt_id']}: " + long_text(rng)[:200] + "?")
        p["chosen"] = conv("assistant", texts[(p["prompt_id"], p["chosen_idx"])])
        p["rejected"] = conv("assistant", texts[(p["prompt_id"], p["rejected_idx"])])
    prompts = {p["prompt_id"]: p["prompt"] for p in prefs}
    for r in resp:
        r["prompt"] = prompts[r["prompt_id"]]
    tables["responses"] = pa.Table.from_pylist(resp, schema=schemas.get("responses").arrow)
    tables["preferences"] = pa.Table.from_pylist(prefs, schema=schemas.get("preferences").arrow)
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"method": "cream", "stages": {}}))
    (root / "config.yaml").write_text("method: cream\niterations: 1\n")
    for kind, table in tables.items():
        extra = {"config": {"scope": "sample", "reward": "dpo"}} if kind == "preferences" else None
        write_table(table, root / "iter-1" / kind, kind, manifest_extra=extra)


def chromium() -> str:
    found = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if not found:
        sys.exit("no chromium on PATH (apt-get install chromium)")
    return found


def open_page(browser: str, page: Path, shot: Path) -> dict:
    """One open of ``page``: the in-page time to the first rows, rows drawn, and the wall time of each process."""
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1000"]
    t0 = time.perf_counter()
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=600).stdout
    dump_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(base + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=600, check=True)
    shot_s = time.perf_counter() - t0
    first = re.search(r'data-first-rows-ms="([\d.]+)"', dom)
    rows = re.search(r'data-rendered="(\d+)"', dom)
    if not first or not rows:
        raise RuntimeError(f"{page}: the page did not render (DOM tail: {dom[-500:]!r})")
    return {"first_rows_ms": float(first.group(1)), "rows": int(rows.group(1)), "dump_s": dump_s, "shot_s": shot_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="write the run and pages here (default: a temp folder)")
    args = ap.parse_args()
    browser = chromium()
    work = args.keep or Path(tempfile.mkdtemp(prefix="cream-browse-bench-"))
    run = work / "run"
    if not run.exists():
        make_run(run, args.pairs)
    lazy = work / "pairs.html"
    t0 = time.perf_counter()
    result = browse(run, lazy)
    build_s = time.perf_counter() - t0
    text = lazy.read_text(encoding="utf-8")
    if text.count(LAZY) != 1:
        raise RuntimeError(f"{lazy}: batch size line not found")
    eager = work / "pairs-eager.html"
    eager.write_text(text.replace(LAZY, EAGER), encoding="utf-8")

    runs: dict[str, list[dict]] = {"lazy": [], "eager": []}
    for r in range(args.repeats):  # alternate which page opens first
        for name in (("lazy", "eager") if r % 2 == 0 else ("eager", "lazy")):
            runs[name].append(open_page(browser, lazy if name == "lazy" else eager, work / f"{name}.png"))

    print(f"{result.pairs:,} pairs, 4 responses each; page {result.bytes / 1e6:.1f} MB; "
          f"`cream browse` (read tables, build, write) {build_s:.2f} s")
    print(f"median of {args.repeats} opens in headless Chromium ({Path(browser).name}):")
    print("| page  | rows drawn | first rows in DOM (in page) | chromium --dump-dom wall | chromium --screenshot wall |")
    print("|-------|-----------:|----------------------------:|-------------------------:|---------------------------:|")
    for name, got in runs.items():
        med = {k: statistics.median(g[k] for g in got) for k in ("first_rows_ms", "dump_s", "shot_s")}
        print(f"| {name:5} | {got[0]['rows']:>10,} | {med['first_rows_ms']:>24.0f} ms | {med['dump_s']:>22.2f} s "
              f"| {med['shot_s']:>24.2f} s |")
    print(f"files in {work}")


if __name__ == "__main__":
    main()
