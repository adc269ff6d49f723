"""`cream publish`: the Hub repository folder read back by `datasets`, the card, TRL, the upload path offline."""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cream_data.publish import card
from cream_data.publish import hub
from cream_data.publish import hub_upload
from cream_data.publish.trl_usage import TRL_REFERENCE
from cream_data.errors import CreamError
from cream_data.tables.io import read_table, write_table
from tests.support.cli import assert_user_error, snapshot
from tests.support.published import make_run, make_tables


def hub_http():
    """The HTTP client module huggingface_hub uses: httpx2 (hub 2.x) or httpx (hub 1.x, under transformers < 5.23)."""
    try:
        import httpx2 as client
    except ImportError:
        import httpx as client
    return client


@pytest.fixture
def run_dir(tmp_path) -> tuple[Path, dict]:
    tables = make_run(tmp_path / "run")
    return tmp_path / "run", tables


# ------------------------------------------------------------------------------------------ the folder
def test_dry_run_folder_reads_back_row_for_row(run_dir, tmp_path, cli):
    from datasets import load_dataset

    root, tables = run_dir
    out = tmp_path / "repo"
    r = cli("publish", root, "--repo-id", "me/cream-prefs", "--dry-run", "--out", out)
    assert r.code == 0, r
    assert "data/preferences/iter_1-00000-of-00001.parquet" in r.out and "README.md" in r.out
    assert "nothing uploaded" in r.out and str(out) in r.out
    sizes = {line.split()[1]: int(line.split()[0].replace(",", "")) for line in r.out.splitlines()[:-2]}
    assert sizes == {p: (out / p).stat().st_size for p in sizes} and len(sizes) == 7  # 3 configs x 2 + README

    for kind in hub.CONFIG_KINDS:
        ds = load_dataset(str(out), kind)
        assert sorted(ds) == ["iter_1", "iter_2"]
        for t in (1, 2):
            got = ds[f"iter_{t}"].data.table
            want = tables[t][kind]
            if kind == "preferences":  # TRL's names for the stored log-probs, beside ours: the same float64 values
                assert got.column_names == want.column_names + list(TRL_REFERENCE.values())
                for ours, theirs in TRL_REFERENCE.items():
                    assert got.schema.field(theirs).type == pa.float64()
                    assert got.column(theirs).to_pylist() == want.column(ours).to_pylist()
                    assert None not in got.column(theirs).to_pylist()
                got = got.drop_columns(list(TRL_REFERENCE.values()))
            assert got.column_names == want.column_names
            assert got.cast(want.schema).equals(want.replace_schema_metadata(None).cast(want.schema)), (kind, t)
            assert got.to_pylist() == want.to_pylist()
    # the default config is preferences
    assert sorted(load_dataset(str(out))) == ["iter_1", "iter_2"]
    assert load_dataset(str(out))["iter_2"].column_names == \
        tables[2]["preferences"].column_names + list(TRL_REFERENCE.values())
    # cream reads the published files back as its own tables (TRL's copies dropped), concatenated in order
    want = pa.concat_tables([tables[1]["preferences"], tables[2]["preferences"]])
    assert hub.load_preferences(str(out)).to_pylist() == want.to_pylist()
    assert hub.load_preferences(str(out), split="iter_2").to_pylist() == tables[2]["preferences"].to_pylist()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_plain_labeled_folder_single_train_split(tmp_path):
    from datasets import load_dataset

    tables = make_tables(1, 3, seed=5)
    lab = tmp_path / "labeled"
    write_table(tables["preferences"], lab / "preferences", "preferences")
    write_table(tables["scores"], lab / "scores", "scores")
    out = hub.publish(lab, "me/x", dry_run=True).folder
    assert out.parent == tmp_path and out.name.startswith("labeled.hub-")  # default: beside DIR, printed
    assert sorted(load_dataset(str(out), "scores")) == ["train"]
    got = load_dataset(str(out), "preferences", split="train").data.table
    assert got.drop_columns(list(TRL_REFERENCE.values())).to_pylist() == tables["preferences"].to_pylist()
    assert not (out / "data" / "responses").exists()
    data = _card(out).data.to_dict()
    assert data["license"] == "unknown"  # no prompts table: the sources are not known, and we do not guess
    assert "not recorded" in (out / "README.md").read_text()
    assert hub.load_preferences(str(lab)).to_pylist() == tables["preferences"].to_pylist()


def _card(folder: Path):
    from huggingface_hub import DatasetCard, DatasetCardData

    c = DatasetCard.load(folder / "README.md")
    assert isinstance(c.data, DatasetCardData)
    return c


def test_card_yaml_lineage_statistics_and_licence(run_dir, tmp_path):
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs

    root, tables = run_dir
    out = hub.build(root, tmp_path / "repo", "me/cream-prefs")
    c = _card(out)
    data = c.data.to_dict()
    for cfg in data["configs"]:
        for entry in cfg["data_files"]:
            assert entry["path"] and all((out / p).is_file() for p in entry["path"])
    assert [c_["config_name"] for c_ in data["configs"]] == ["preferences", "scores", "responses"]
    assert MetadataConfigs.from_dataset_card_data(c.data).get_default_config_name() == "preferences"
    infos = DatasetInfosDict.from_dataset_card_data(c.data)
    assert infos["preferences"].splits["iter_2"].num_examples == 5
    assert infos["preferences"].features["prompt"].feature["role"].dtype == "string"
    assert data["license"] == ["cc-by-sa-4.0", "mit"]  # ARC and GSM8K; most restrictive first
    assert data["task_categories"] == ["text-generation"] and "dpo" in data["tags"]
    assert data["size_categories"] == ["n<1K"] and data["pretty_name"].endswith("cream-prefs")

    text = c.text
    assert "hf_should_not_appear" not in (out / "README.md").read_text()  # credentials never published
    assert "method: cream" in text and "policy M_t = m2" in text and "scope sample" in text
    assert "| 2 (all_rewards_equal: 2) |" in text and "current = dpo reward of m1" in text
    # statistics against independent computations (statistics module, plain Python margins)
    p = tables[2]["preferences"].to_pylist()
    cs = [r["consistency"] for r in p]
    margins = [r["rewards"][r["chosen_idx"]] - r["rewards"][r["rejected_idx"]] for r in p]
    st = card.preference_stats(tables[2]["preferences"])
    assert st["consistency"]["mean"] == pytest.approx(statistics.fmean(cs))
    assert st["consistency"]["median"] == pytest.approx(statistics.median(cs))
    assert st["consistency"]["std"] == pytest.approx(statistics.pstdev(cs))
    assert st["reward_margin"]["mean"] == pytest.approx(statistics.fmean(margins))
    assert min(margins) >= 0 and st["reward_margin"]["min"] == pytest.approx(min(margins))
    row = next(line for line in text.splitlines() if line.startswith("| iter_2 | 5 |"))
    assert f"{statistics.fmean(cs):.4f} / {statistics.median(cs):.4f} / {statistics.pstdev(cs):.4f}" in row


def test_licence_rules():
    assert card.licence_of({"gsm8k:test.jsonl": 3}).value == "mit"
    assert card.licence_of({"alpaca_eval:x.jsonl": 1, "oasst:y.jsonl": 2}).value == ["cc-by-nc-4.0", "apache-2.0"]
    assert card.licence_of({"siqa:dev.jsonl": 1}).value == "unknown"
    assert card.licence_of({"generic:mine.jsonl": 1, "gsm8k:t": 1}).value == ["unknown", "mit"]
    assert card.licence_of({None: 4}).value == "unknown"
    o = card.licence_of({"siqa:dev.jsonl": 1}, override="cc-by-4.0")
    assert o.value == "cc-by-4.0" and o.overridden and "siqa" in o.lines[0]
    assert card.identify_source("openbookqa:test.jsonl")[0] == "openbookqa"
    assert card.identify_source("arc:ARC-Challenge-Test.jsonl")[0] == "arc"
    assert card.identify_source("self_instruct:seed_tasks.jsonl")[0] == "self_instruct_seed"


@pytest.mark.parametrize("name,phrase", [
    ("gsm8k", "Licence: MIT"), ("arc", "CC BY-SA 4.0"), ("openbookqa", "Apache-2.0"),
    ("oasst1", "Apache-2.0"), ("alpaca_eval", "CC BY-NC 4.0"), ("self_instruct_seed", "CC BY-NC 4.0"),
    ("siqa", "no licence file"),
])
def test_known_licences_match_the_provenance_files(shared_data, name, phrase):
    text = (shared_data / name / "PROVENANCE.md").read_text()
    assert phrase in text
    lic = card.identify_source(f"{name.rstrip('1')}:x")[1]
    expected = {"Licence: MIT": "mit", "CC BY-SA 4.0": "cc-by-sa-4.0", "Apache-2.0": "apache-2.0",
                "CC BY-NC 4.0": "cc-by-nc-4.0", "no licence file": None}[phrase]
    assert lic == expected


# ------------------------------------------------------------------------------------------ TRL
def test_stock_trl_dpo_trainer_runs_a_step_on_the_published_config(run_dir, tmp_path, tiny_model):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    root, _ = run_dir
    out = hub.build(root, tmp_path / "repo", "me/cream-prefs")
    ds = load_dataset(str(out), "preferences", split="iter_1")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2,
                     learning_rate=1e-3, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
                     max_length=64, bf16=False, fp16=False)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    # what the card says plain TRL does: `weight` (C) never reaches a batch, and a reference model runs every step
    assert "weight" in ds.column_names and "weight" not in next(iter(trainer.get_train_dataloader()))
    reference_forwards = []
    trainer.ref_model.register_forward_pre_hook(lambda *a: reference_forwards.append(1))
    result = trainer.train()
    assert result.global_step == 1 and len(reference_forwards) == 1
    # before the first update policy == reference, so every pair's DPO loss is -log sigmoid(0) = log 2
    assert result.training_loss == pytest.approx(np.log(2), abs=1e-4)
    assert any(not (p.detach() == before[n]).all() for n, p in model.named_parameters())


# ------------------------------------------------------------------------------------------ upload path
class FakeHub:
    """The Hub endpoints an upload calls, answered on an ``httpx2.MockTransport`` installed with huggingface_hub's
    own ``set_client_factory``: the library's real code runs (create_repo, upload_folder, its retries) and no
    socket is opened. Files are kept by path; ``preupload`` reports the git oid of what is held, as the Hub does."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.commits: list[list[str]] = []
        self.requests: list = []
        self.exists = False
        self.fail: dict[str, list] = {}  # URL path suffix -> responses (status, headers) or exceptions, in turn

    def __call__(self, request):
        httpx2 = hub_http()

        path = request.url.path
        self.requests.append(request)
        for suffix, queued in self.fail.items():
            if path.endswith(suffix) and queued:
                answer = queued.pop(0)
                if isinstance(answer, Exception):
                    raise answer
                status, headers = answer
                return httpx2.Response(status, headers=headers, json={"error": "refused"}, request=request)
        if path == "/api/repos/create":
            self.exists = True
            return httpx2.Response(200, json={"url": "https://huggingface.co/datasets/me/x"})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={})
        if path.endswith("/preupload/main"):
            from huggingface_hub.utils.sha import git_hash

            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                 "oid": git_hash(self.files[f["path"]]) if f["path"] in self.files else None} for f in files]})
        if path.endswith("/commit/main"):
            import base64

            items = [json.loads(line) for line in request.content.splitlines()]
            added = {i["value"]["path"]: base64.b64decode(i["value"]["content"]) for i in items if i["key"] == "file"}
            self.files.update(added)
            self.commits.append(sorted(added))
            return httpx2.Response(200, json={"commitUrl": "https://huggingface.co/datasets/me/x/commit/" + "a" * 40,
                                              "commitOid": "a" * 40})
        if path.startswith("/api/datasets/me/x") and self.exists:  # repo_info
            return httpx2.Response(200, json={"id": "me/x", "sha": "b" * 40})
        return httpx2.Response(404, headers={"X-Error-Code": "RepoNotFound"}, json={"error": "not found"})

    def calls(self, suffix: str) -> list:
        return [r for r in self.requests if r.url.path.endswith(suffix)]


@pytest.fixture
def fake_hub(monkeypatch):
    httpx2 = hub_http()
    import huggingface_hub.constants as c
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_test")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hub_ = FakeHub()
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub_)))
    yield hub_
    set_client_factory(default_client_factory)


def _built(folder: Path) -> dict[str, bytes]:
    return {path: (folder / path).read_bytes() for path, _ in hub.listing(folder)}


def test_upload_is_create_repo_then_upload_folder_and_a_rerun_sends_only_what_the_hub_lacks(run_dir, tmp_path,
                                                                                         fake_hub, monkeypatch):
    root, _ = run_dir
    result = hub.publish(root, "me/x", out=tmp_path / "repo")
    built = _built(tmp_path / "repo")
    assert result.url == "https://huggingface.co/datasets/me/x" and result.files == hub.listing(tmp_path / "repo")
    # the repository is created as a dataset, visibility left to the owner's default; exist_ok: a rerun is fine
    create = json.loads(fake_hub.calls("/api/repos/create")[0].content)
    assert create == {"name": "x", "organization": "me", "type": "dataset"}
    ours = [r for r in fake_hub.requests if r.url.path.startswith(("/api/repos/", "/api/datasets/", "/api/validate"))]
    assert len(ours) == 4 and all(r.headers.get("authorization") == "Bearer hf_fake_token_for_test" for r in ours)
    # one commit holding every file of the folder, byte for byte; the card's YAML checked by the Hub first
    assert fake_hub.commits == [sorted(built)] and fake_hub.files == built
    assert json.loads(fake_hub.calls("/api/validate-yaml")[0].content)["repoType"] == "dataset"
    header = json.loads(fake_hub.calls("/commit/main")[0].content.splitlines()[0])
    assert header == {"key": "header", "value": {"summary": hub_upload.COMMIT_MESSAGE, "description": ""}}

    # a rerun of the same command: the rebuilt folder is byte-identical, the Hub holds it all, nothing is committed
    hub.publish(root, "me/x", out=tmp_path / "repo")
    assert len(fake_hub.commits) == 1 and fake_hub.files == built
    # an interrupted upload (the Hub holds part of it): the rerun commits exactly the missing files
    lost = ["README.md", "data/scores/iter_2-00000-of-00001.parquet"]
    for path in lost:
        del fake_hub.files[path]
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    hub.publish(root, "me/x")  # without --out: a temporary folder, gone afterwards
    assert fake_hub.commits[-1] == sorted(lost) and fake_hub.files == built
    assert not any((tmp_path / "tmp").iterdir())


def test_upload_private_and_hidden_files(run_dir, tmp_path, fake_hub):
    from huggingface_hub.utils import filter_repo_objects
    from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

    root, _ = run_dir
    out = hub.build(root, tmp_path / "repo", "me/x")
    (out / ".notes").write_text("mine")
    (out / "data" / ".tmp").mkdir()
    (out / "data" / ".tmp" / "x.parquet").write_bytes(b"partial")
    # what upload_folder's own filter keeps with our patterns is exactly what `listing` shows and the CLI prints
    every = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    kept = list(filter_repo_objects(every, ignore_patterns=[*hub_upload.UPLOAD_IGNORE, *DEFAULT_IGNORE_PATTERNS]))
    assert kept == [p for p, _ in hub.listing(out)] and len(kept) == len(every) - 2
    hub_upload.upload(out, "me/x", token="hf_fake_token_for_test", private=True)
    assert json.loads(fake_hub.calls("/api/repos/create")[0].content)["visibility"] == "private"
    assert fake_hub.commits == [kept]


def test_upload_transient_commit_failure_is_retried_by_huggingface_hub(run_dir, tmp_path, fake_hub):
    root, _ = run_dir
    out = hub.build(root, tmp_path / "repo", "me/x")
    fake_hub.fail["/commit/main"] = [(503, {"Retry-After": "0"})]
    hub_upload.upload(out, "me/x", token="hf_fake_token_for_test")
    assert len(fake_hub.calls("/commit/main")) == 2 and fake_hub.files == _built(out)


@pytest.mark.parametrize("suffix,answer,message", [
    ("/api/repos/create", (401, {"X-Error-Message": "Invalid credentials in Authorization header"}),
     "the Hub rejected the token (HTTP 401)"),
    ("/api/repos/create", (403, {"X-Error-Message": "You don't have the rights to create a dataset under me"}),
     "may not write to me/x (HTTP 403: You don't have the rights"),
    ("/preupload/main", (404, {"X-Error-Code": "RepoNotFound"}), "the Hub has no dataset me/x that this token"),
    ("/preupload/main", (400, {"X-Error-Message": "bad request"}), "upload to me/x failed (BadRequestError"),
    ("/api/repos/create", (503, {}), "rerun the same command to resume"),
    ("/api/repos/create", "connect", "failed (ConnectError: connection refused for ***); rerun"),
])
def test_upload_errors_are_one_line_exit_2_without_the_token(run_dir, tmp_path, cli, fake_hub, suffix, answer,
                                                             message):
    httpx2 = hub_http()

    root, _ = run_dir
    refused = httpx2.ConnectError("connection refused for hf_fake_token_for_test")  # a token in a library message
    fake_hub.fail[suffix] = [refused if answer == "connect" else answer]
    r = cli("publish", root, "--repo-id", "me/x", "--out", tmp_path / "repo")
    assert_user_error(r, message)
    assert "hf_fake_token_for_test" not in r.out + r.err
    assert ("rerun the same command" in r.err) == (answer in ("connect", (503, {})))
    assert not fake_hub.commits and (tmp_path / "repo" / "README.md").is_file()  # the built folder is complete


def test_rebuild_is_byte_identical_so_a_rerun_sends_nothing_new(run_dir, tmp_path):
    root, _ = run_dir
    out = hub.build(root, tmp_path / "repo", "me/cream-prefs")
    assert [p for p, _ in hub.listing(out)] == sorted(
        ["README.md"] + [f"data/{k}/iter_{t}-00000-of-00001.parquet" for k in hub.CONFIG_KINDS for t in (1, 2)])
    again = hub.build(root, tmp_path / "repo2", "me/cream-prefs")
    digest = {p: hashlib.sha256(b).hexdigest() for p, b in _built(out).items()}
    assert {p: hashlib.sha256(b).hexdigest() for p, b in _built(again).items()} == digest


def test_upload_offline_is_one_line_and_keeps_a_complete_out(run_dir, tmp_path, cli, monkeypatch):
    """As far as the real upload goes without a network: token found, HfApi called, offline refused."""
    root, _ = run_dir
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    r = cli("publish", root, "--repo-id", "me/cream-prefs", "--out", tmp_path / "repo")
    assert_user_error(r, "HF_HUB_OFFLINE")
    assert "hf_fake_token_for_test" not in r.out + r.err
    assert (tmp_path / "repo" / "README.md").is_file()  # the folder built before the upload is complete


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_one_line_errors_and_nothing_left(run_dir, tmp_path, cli, monkeypatch):
    root, _ = run_dir
    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)
    out = tmp_path / "out"
    assert_user_error(cli("publish", empty, "--repo-id", "me/x", "--dry-run", "--out", out), "no preferences")
    assert_user_error(cli("publish", root, "--repo-id", "me/bad--name", "--dry-run", "--out", out), "--repo-id")
    assert_user_error(cli("publish", root, "--repo-id", "a/b/c", "--dry-run", "--out", out), "--repo-id")
    assert_user_error(cli("publish", root, "--repo-id", "noowner", "--dry-run", "--out", out), "owner/name")
    assert_user_error(cli("publish", root, "--repo-id", "me/x", "--dry-run", "--out", out, "--license", "MIT!"),
                      "--license")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    assert_user_error(cli("publish", root, "--repo-id", "me/x", "--out", out), "no Hugging Face token")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (out).mkdir()
    (out / "precious.txt").write_text("mine")
    assert_user_error(cli("publish", root, "--repo-id", "me/x", "--dry-run", "--out", out), "not a folder written")
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    # a corrupt table: the error names it, and --out is untouched
    broken = tmp_path / "broken"
    write_table(make_tables(1, 2, seed=3)["preferences"], broken / "preferences", "preferences")
    (broken / "preferences" / "part-00000.parquet").write_bytes(b"not parquet")
    assert_user_error(cli("publish", broken, "--repo-id", "me/x", "--dry-run", "--out", tmp_path / "o2"),
                      "part-00000.parquet")
    assert not (tmp_path / "o2").exists()
    with pytest.raises(CreamError, match="neither a local path nor a Hub dataset id"):
        hub.load_preferences("not a/valid/id")
    with pytest.raises(CreamError, match="me/never-downloaded: could not download"):  # offline, nothing cached
        hub.load_preferences("me/never-downloaded")


def test_republish_replaces_the_folder_whole(run_dir, tmp_path):
    root, tables = run_dir
    inside = hub.build(root, root / "hub", "me/x")  # an --out inside DIR is not read back as more tables
    out = hub.build(root, tmp_path / "repo", "me/x")
    assert hub.listing(inside) == hub.listing(out)
    assert hub.load_preferences(str(root)).num_rows == 10
    (out / "data" / "stale.parquet").write_bytes(b"old")
    hub.build(root, out, "me/x", license="cc-by-4.0")
    assert not (out / "data" / "stale.parquet").exists()
    assert _card(out).data.to_dict()["license"] == "cc-by-4.0"
    assert read_table(out / "data/preferences/iter_1-00000-of-00001.parquet", "preferences").num_rows == 5


@pytest.mark.parametrize("text, needle", [
    ("a0: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ",".join(["*a" if i == 1 else f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9)),
     "expands to more than"),
    ("note: " + "z" * (3 << 20) + "\n", "config file is 3.0 MiB"),
])
def test_publish_reads_a_run_config_within_bounds(cream_exe, tmp_path, text, needle):
    """A run folder's config.yaml (a billion laughs hung `cream publish`; 3 MB was read whole) is refused."""
    make_run(tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text(text)
    before = snapshot(tmp_path)
    r = cream_exe("publish", tmp_path / "run", "--repo-id", "me/x", "--dry-run", "--allow-unfinished", "--out",
                  tmp_path / "pub", cwd=tmp_path, timeout=60)
    assert_user_error(r, "config.yaml", needle)
    assert snapshot(tmp_path) == before


def test_an_unfinished_table_is_refused_not_left_out(run_dir, tmp_path, cream_exe):
    """Parts without their manifest (a stage stopped, a manifest lost) were silently left out of the dataset."""
    root, _ = run_dir
    (root / "iter-2" / "preferences" / "_manifest.json").unlink()
    before = snapshot(tmp_path)
    r = cream_exe("publish", root, "--repo-id", "me/x", "--dry-run", "--allow-unfinished", "--out", tmp_path / "pub",
                  cwd=tmp_path, timeout=60)
    assert_user_error(r, str(root / "iter-2" / "preferences"), "without a complete manifest", "--exclude")
    assert snapshot(tmp_path) == before
    r = cream_exe("publish", root, "--repo-id", "me/x", "--dry-run", "--allow-unfinished", "--out", tmp_path / "pub",
                  "--exclude", "iter-2/preferences", cwd=tmp_path, timeout=60)
    assert r.code == 0, r
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "pub" / "data" / "preferences").glob("*.parquet"))
    assert names == ["iter_1"], names
