"""Class "done": every resume, skip and "already done" claim is checked against what is on disk — a stage that finds
its output damaged redoes it (the right rows, no duplicates) or refuses in one line; it never says done."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from bench.hostile.core import Case
from bench.hostile.helpers import both, either, has_rows, ok, parts, refuse

D = "done"
SAMPLE = ["sample", "prompts", "--out", "responses", "--model", "tiny", "--n", "3", "--max-new-tokens", "8",
          "--batch-size", "4"]
LABEL = ["label", "responses", "--out", "labeled", "--model", "tiny", "--prev-model", "tiny-b"]
EVAL = ["eval", "--model", "tiny", "--out", "evaluated", "--tasks", "arc_easy", "--limit", "2", "--data-dir", None,
        "--max-new-tokens", "4"]


def _link(d: Path, w, *names: str) -> None:
    for n in names:
        os.symlink(w.root / n, d / n)


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _manifest_rows(folder: Path, delta: int) -> None:
    m = json.loads((folder / "_manifest.json").read_text())
    m["rows"] = m["rows"] + delta
    (folder / "_manifest.json").write_text(json.dumps(m))


def _stage(fixture: str, args: list, damage, links=("prompts", "tiny", "tiny-b")):
    """Copy the stage's output ``fixture``, damage it, rerun the command that made it (same arguments, same
    folder names as when it was built)."""
    def setup(d, w):
        _link(d, w, *[n for n in links if n != fixture])
        if fixture == "labeled":
            _link(d, w, "responses")
        damage(w.copy(fixture, d))
        return list(args)
    return setup


def _eval_args():
    from bench.hostile.world import DATA

    return [a if a is not None else DATA / "eval" for a in EVAL]


def _sample_parts(damage):
    """A four-part responses table (one prompt a part), damaged, then the same command again."""
    def setup(d, w):
        _link(d, w, "prompts", "tiny")
        from bench.hostile.core import run_cream

        args = [*SAMPLE[:-1], "1", "--prompts-per-part", "1"]  # one prompt a batch, one batch a part
        run_cream(args, d, 600)
        damage(d / "responses")
        return args
    return setup


def _drop_manifest_and_part(folder: Path) -> None:
    (folder / "_manifest.json").unlink()
    parts(folder)[1].unlink()


def _run(damage, *extra):
    def setup(d, w):
        shutil.copy(w.root / "run.yaml", d / "run.yaml")
        damage(w.copy("run", d))
        return ["run", "run.yaml", *extra]
    return setup


def _model_ok(rel):
    def check(d: Path, r) -> str | None:
        m = d / rel
        if not any(m.glob("*.safetensors")) or not (m / "config.json").is_file():
            return f"{rel} has no weights after exit 0"
        return None
    return check


def _plan_not_done(stage):
    def check(d: Path, r) -> str | None:
        for line in r.out.splitlines():  # STATUS  STAGE  [why], each stage's commands indented below it
            words = line.split()
            if not line.startswith(" ") and len(words) >= 2 and words[1] == stage:
                return f"--plan says {words[0]!r} for {stage}" if words[0] in ("done", "reuse") else None
        return f"--plan does not list {stage}"
    return check


def _hidden_staging(d, w):
    lab = w.copy("responses", d)
    shutil.copytree(lab, d / "responses" / ".responses.replaced")
    return ["sql", d / "responses", "SELECT count(*) AS n FROM responses"]


def _count_is(n):
    return lambda d, r: None if f"{n}" in r.out and "24" not in r.out else f"sql answered {r.out.strip()[-80:]!r}"


def _folder_without_manifest(fixture, sub, args_fn):
    def setup(d, w):
        out = w.copy(fixture, d)
        (out / sub / "_manifest.json").unlink()
        return args_fn(d, w, out / sub)
    return setup


def _missing_listed_part(fixture, sub, args_fn):
    def setup(d, w):
        out = w.copy(fixture, d)
        for p in parts(out / sub):
            p.unlink()
        return args_fn(d, w, out / sub)
    return setup


def _train(d, w, data):
    return ["train", data, "--model", w.tiny, "--out", d / "m", "--max-steps", "1"]


def _label_in(d, w, data):
    return ["label", data, "--out", d / "out", "--model", w.tiny]


def _publish(d, w, data):
    return ["publish", data.parent, "--repo-id", "me/x", "--dry-run", "--out", d / "pub"]


def _inspect(d, w, data):
    return ["inspect", data.parent, "--out", d / "rep"]


def _sql(d, w, data):
    return ["sql", data, "SELECT count(*) FROM scores"]


def _foreign_part(folder: Path) -> None:
    shutil.copy(parts(folder)[0], folder / "part-00009.parquet")


def _follower(d, w):
    shutil.copy(w.root / "run.yaml", d / "run.yaml")
    with open(d / "run.yaml", "a") as f:
        f.write("nodes: {num_machines: 2, main_process_ip: 127.0.0.1, start_timeout: 2, alive_timeout: 2}\n")
    return ["run", "run.yaml", "--machine-rank", "1"]


def _no_alive(d: Path, r) -> str | None:
    left = list(d.rglob("*.alive"))
    return f"left behind: {[str(p.relative_to(d)) for p in left]}" if left else None


RESP_OK = has_rows("responses", 12)
CASES = [
    either(D, "sample rerun: its only part deleted", _stage("responses", SAMPLE, lambda o: parts(o)[0].unlink()),
           RESP_OK),
    either(D, "sample rerun: its part truncated", _stage("responses", SAMPLE, lambda o: _truncate(parts(o)[0])),
           RESP_OK),
    either(D, "sample rerun: manifest claims 5 rows more", _stage("responses", SAMPLE,
                                                                 lambda o: _manifest_rows(o, 5)), RESP_OK),
    ok(D, "sample rerun: manifest deleted (resume)", _stage("responses", SAMPLE,
                                                            lambda o: (o / "_manifest.json").unlink()), RESP_OK),
    either(D, "sample rerun: a foreign part-00009 added", _stage("responses", SAMPLE, _foreign_part), RESP_OK),
    ok(D, "sample resume: manifest and part 2 of 4 deleted (part numbers)", _sample_parts(_drop_manifest_and_part),
       RESP_OK),
    either(D, "sample resume: part 2 of 4 deleted, manifest kept", _sample_parts(lambda o: parts(o)[1].unlink()),
           RESP_OK),
    either(D, "label rerun: preferences part deleted", _stage("labeled", LABEL,
                                                             lambda o: parts(o / "preferences")[0].unlink()),
           has_rows("labeled/preferences", 4)),
    either(D, "label rerun: scores part deleted", _stage("labeled", LABEL, lambda o: parts(o / "scores")[0].unlink()),
           has_rows("labeled/scores", 24)),
    either(D, "label rerun: a log-prob cache part truncated", _stage(
        "labeled", LABEL, lambda o: [_truncate(parts(c)[0]) for c in (o / "logps").iterdir()]),
        both(has_rows("labeled/preferences", 4), has_rows("labeled/scores", 24))),
    either(D, "label rerun: a log-prob cache claims 5 rows more", _stage(
        "labeled", LABEL, lambda o: [_manifest_rows(c, 5) for c in (o / "logps").iterdir()]),
        has_rows("labeled/scores", 24)),
    ok(D, "label rerun: preferences manifest deleted", _stage(
        "labeled", LABEL, lambda o: (o / "preferences" / "_manifest.json").unlink()),
        has_rows("labeled/preferences", 4)),
    either(D, "eval rerun: its part deleted", lambda d, w: _stage("evaluated", _eval_args(),
                                                                   lambda o: parts(o)[0].unlink())(d, w),
           has_rows("evaluated", 2)),
    either(D, "eval rerun: manifest claims 5 rows more", lambda d, w: _stage(
        "evaluated", _eval_args(), lambda o: _manifest_rows(o, 5))(d, w), has_rows("evaluated", 2)),
    either(D, "run rerun: M1's weights deleted", _run(lambda r: [p.unlink() for p in (r / "models" / "M1").glob(
        "*.safetensors")]), _model_ok("run/models/M1"), timeout=600),
    either(D, "run rerun: iteration 1's responses part deleted", _run(
        lambda r: parts(r / "iter-1" / "responses")[0].unlink()), has_rows("run/iter-1/responses", 12),
        timeout=600),
    refuse(D, "run rerun: manifest.json truncated", _run(lambda r: _truncate(r / "manifest.json")), "manifest"),
    refuse(D, "run rerun: manifest stages is a string", _run(lambda r: (r / "manifest.json").write_text(
        json.dumps({**json.loads((r / "manifest.json").read_text()), "stages": "done"}))), "manifest"),
    ok(D, "run --plan: M2's weights deleted", _run(lambda r: [p.unlink() for p in (r / "models" / "M2").glob(
        "*.safetensors")], "--plan"), _plan_not_done("train-M2")),
    ok(D, "run --plan: iteration 1's preferences deleted", _run(
        lambda r: shutil.rmtree(r / "iter-1" / "preferences"), "--plan"), _plan_not_done("label-1")),
    ok(D, "sql: a hidden staging copy inside the table folder", _hidden_staging, _count_is(12)),
    refuse(D, "train: a preferences folder without its manifest",
           _folder_without_manifest("labeled", "preferences", _train), "preferences"),
    refuse(D, "label: a responses folder without its manifest",
           _folder_without_manifest("responses", ".", _label_in), "responses"),
    refuse(D, "train: preferences manifest lists parts that are gone",
           _missing_listed_part("labeled", "preferences", _train), "part-00000"),
    refuse(D, "publish: a label folder whose scores parts are gone",
           _missing_listed_part("labeled", "scores", _publish), "part-00000"),
    refuse(D, "inspect: a label folder whose scores parts are gone",
           _missing_listed_part("labeled", "scores", _inspect), "part-00000"),
    refuse(D, "sql: a table whose parts are gone", _missing_listed_part("labeled", "scores", _sql), "part-00000"),
    Case(D, "follower that times out removes its heartbeat", _follower, "fails", check=_no_alive, timeout=120),
]
