"""pytest_icl.report.keys, .store and .merge: a report folder as a store of pairs (issue 17, parts 1-3).

Keys, adding and replacing pairs, resume, the derived files rebuilt from every pair, one setup per
folder, two processes writing into one folder, and ``python -m pytest_icl merge`` on hand-made shards.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_icl.errors import UsageError
from pytest_icl.report import keys as K
from pytest_icl.report import store as S
from pytest_icl.report.baseline import COMPARED, NOT_COMPARED
from pytest_icl.report.merge import merge
from pytest_icl.sharding import fingerprint

VERSIONS = {"pytest-icl": "0.1.0", "torch": "2.13.0", "transformers": "5.23.0", "lm_eval": "0.4.13", "datasets": "3.0", "pytest": "8.4"}
SETTINGS = {"dtype": "float32", "shots": None, "thresholds": {}, "controls": []}


def make_row(model_id: str = "tiny", task: str = "ant", *, value: float = 0.5, half_width: float = 0.05, **changes) -> dict:
    """A result row as the pipeline writes it (every catalogue metric, with intervals and layers)."""
    metrics = list(COMPARED) + list(NOT_COMPARED)
    row = {
        "task": task, "task_hash": f"hash-{task}", "model": model_id, "model_id": model_id, "revision": None,
        "weights_hash": f"weights-{model_id}", "dtype": "float32", "device": "cpu", "shots": 4, "seed": 1, "lr": 0.01,
        "lr_source": "fixed", "position": "label", "eval": 12,
        "values": {m: value for m in metrics},
        "intervals": {m: [value - half_width, value + half_width] for m in metrics},
        "layers": {m: [0.1, 0.2, 0.3] for m in ("simaou", "simam_after", "kendall")},
        "counts": {"eval": 12}, "timings": {}, "versions": dict(VERSIONS),
        "properties": {"accuracy": "passed", "simaou": "failed"},
    }  # fmt: skip
    row.update(changes)
    return row


def open_store(folder: Path, **changes) -> S.Store:
    options = {"versions": VERSIONS, "settings": SETTINGS, **changes}
    return S.Store.open(folder, **options)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_icl", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


def result_rows(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())["rows"]


# ---- the key


def test_the_same_weights_under_another_name_are_the_same_key():
    assert K.key_of(make_row("tiny")) != K.key_of(make_row("other"))
    assert K.key_of(make_row("tiny")) == K.key_of(make_row("alias", weights_hash="weights-tiny"))


@pytest.mark.parametrize(
    "change",
    [{"task_hash": "edited"}, {"dtype": "bfloat16"}, {"shots": 8}, {"seed": 2}, {"lr": 0.03}, {"position": "query"}, {"draws": 3},
     {"shuffled_control": True}, {"controls": {"shuffled": {}}}, {"task": "ant2"}],
)  # fmt: skip
def test_every_setting_of_the_experiment_is_in_the_key(change):
    assert K.key_of(make_row(**change)) != K.key_of(make_row())


def test_device_eval_count_and_versions_are_not_in_the_key():
    # the eval count is in the task hash; draws that overlap the eval examples shrink it only after the run
    other = make_row(device="cuda:1", versions={**VERSIONS, "pytest": "9.0"}, timings={"ft": 1.0}, eval=10)
    assert K.key_of(other) == K.key_of(make_row())


def test_the_key_a_run_builds_before_it_runs_is_the_rows_key():
    row = make_row(lr=0.003, lr_source="validation", controls={"seeds": {"seeds": [1, 2, 3]}, "shuffled": {}}, draws=3,
                   shuffled_control=True)  # fmt: skip
    before = K.make_key(
        model="weights-tiny", task="ant", task_hash="hash-ant", dtype="float32", shots=4, seed=1, lr="auto",
        position="label", draws=3, shuffled=True, controls=K.controls_field(("shuffled", "seeds"), seeds=3),
    )  # fmt: skip
    assert before == K.key_of(row)
    assert K.key_of(row).as_dict()["controls"] == ("seeds:3", "shuffled")


def test_without_a_weights_hash_the_model_id_and_revision_name_the_model():
    assert K.key_of(make_row(weights_hash=None, revision="abc")).as_dict()["model"] == "tiny@abc"


# ---- pairs in, files out


def test_put_has_get_and_a_replaced_pair_is_reported(tmp_path):
    store = open_store(tmp_path / "r")
    row = make_row()
    assert not store.has(K.key_of(row))
    assert store.put(row, "sample line\n") is False
    assert store.has(K.key_of(row)) and store.get(K.key_of(row))["values"] == row["values"]
    again = make_row("alias", weights_hash="weights-tiny", value=0.6)
    assert store.put(again) is True
    assert store.replaced == ["alias-ant (float32, k=4, seed 1) (was tiny-ant (float32, k=4, seed 1))"]
    assert [r["model_id"] for r in store.rows()] == ["alias"]
    assert store.entries()[0].samples_text() == "sample line\n"  # a row without samples keeps the key's


def test_samples_stored_ahead_of_the_row_as_an_xdist_worker_does(tmp_path):
    store = open_store(tmp_path / "r")
    row = make_row()
    S.Store.read(tmp_path / "r").put_samples(K.key_of(row), "from the worker\n")
    store.put(row)
    store.rebuild()
    assert (tmp_path / "r" / "samples_tiny_ant.jsonl").read_text() == "from the worker\n"


def test_rebuild_writes_results_and_samples_from_every_pair(tmp_path):
    folder = tmp_path / "r"
    store = open_store(folder)
    for model, task in (("b", "t1"), ("a", "t2"), ("a", "t1")):
        store.put(make_row(model, task), f"{model} {task}\n")
    store.rebuild()
    assert [(r["model_id"], r["task"]) for r in result_rows(folder)] == [("a", "t1"), ("a", "t2"), ("b", "t1")]
    assert (folder / "results.csv").read_text().count("\n") == 4
    assert (folder / "samples_a_t2.jsonl").read_text() == "a t2\n"
    assert not list(folder.rglob("*.tmp"))
    # a run that ran only model b's pair keeps a's pairs in the files
    later = open_store(folder)
    later.put(make_row("b", "t1", value=0.7))
    later.rebuild(model_order=("b",))
    assert [(r["model_id"], r["values"]["acc_icl"]) for r in result_rows(folder)] == [("b", 0.7), ("a", 0.5), ("a", 0.5)]


def test_two_settings_of_one_pair_stay_side_by_side_with_their_own_samples(tmp_path):
    folder = tmp_path / "r"
    (folder).mkdir()
    (folder / "notes.txt").write_text("mine")
    store = open_store(folder)
    store.put(make_row(), "k4\n")
    store.rebuild()
    assert (folder / "samples_tiny_ant.jsonl").exists()
    store.put(make_row(shots=8), "k8\n")
    store.rebuild()
    samples = sorted(p.name for p in folder.glob("samples_*.jsonl"))
    assert len(samples) == 2 and all(name.startswith("samples_tiny_ant_") for name in samples)  # the old name went: it was derived
    assert sorted(p.read_text() for p in folder.glob("samples_*.jsonl")) == ["k4\n", "k8\n"]
    assert (folder / "notes.txt").read_text() == "mine"  # a file the store did not write is never touched
    assert len(result_rows(folder)) == 2


def test_an_interrupted_run_resumes_from_the_pairs_it_finished(tmp_path):
    folder = tmp_path / "r"
    first = open_store(folder, shard="0/1", pairs="fp")
    first.put(make_row("a", "t1"))  # then the run dies: no rebuild
    resumed = open_store(folder, shard="0/1", pairs="fp")
    assert resumed.has(K.key_of(make_row("a", "t1"))) and not resumed.has(K.key_of(make_row("a", "t2")))
    assert resumed.read_manifest()["shards"] == [{"shard": "0/1", "pairs": "fp"}]  # the same run is listed once


def test_a_folder_with_another_setup_is_refused_in_one_paragraph(tmp_path):
    folder = tmp_path / "r"
    open_store(folder).put(make_row())
    open_store(folder, versions={**VERSIONS, "pytest": "9.1"})  # pytest cannot move a number
    with pytest.raises(UsageError) as error:
        open_store(folder, versions={**VERSIONS, "torch": "2.14.0"}, settings={**SETTINGS, "shots": 8})
    message = str(error.value)
    assert '"2.13.0" in' in message and '"2.14.0" in this run' in message and "setting shots null in" in message
    assert "another folder" in message and "\n" not in message


def test_a_report_from_before_stores_is_taken_over_not_overwritten(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"schema": 1, "rows": [make_row("a", "t"), make_row("b", "t")]}))
    (folder / "samples_a_t.jsonl").write_text("old samples\n")
    store = open_store(folder)
    assert store.adopted == 2
    store.put(make_row("c", "t"))
    store.rebuild()
    assert [r["model_id"] for r in result_rows(folder)] == ["a", "b", "c"]
    assert (folder / "samples_a_t.jsonl").read_text() == "old samples\n"


def test_a_damaged_pair_file_is_named_not_skipped(tmp_path):
    store = open_store(tmp_path / "r")
    store.put(make_row())
    next((tmp_path / "r" / "pairs").glob("*.json")).write_text("{not json")
    with pytest.raises(UsageError, match=r"pair file .*\.json cannot be read .*delete it to compute that pair again"):
        store.rows()


def test_reading_a_folder_that_is_no_store_says_so(tmp_path):
    with pytest.raises(UsageError, match="is not a pytest-icl report store"):
        S.Store.read(tmp_path)


# ---- concurrent writers


def _writer(folder: str, model: str, count: int) -> None:
    for index in range(count):
        # Each open records a run in the manifest (a read-modify-write); without the lock about half
        # of these records are lost, where the pairs' own files would survive.
        store = open_store(Path(folder), pairs=f"{model}-{index}")
        store.put(make_row(model, f"t{index}"), f"{model}\n")
        store.rebuild()


def test_two_processes_writing_one_folder_keep_both_pairs(tmp_path):
    folder, count = tmp_path / "shared", 10
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(str(folder), model, count)) for model in ("a", "b")]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
    assert [process.exitcode for process in writers] == [0, 0]
    rows = result_rows(folder)
    assert sorted((r["model_id"], r["task"]) for r in rows) == sorted((m, f"t{i}") for m in "ab" for i in range(count))
    assert len(list(folder.glob("samples_*.jsonl"))) == 2 * count
    assert len(S.Store.read(folder).read_manifest()["shards"]) == 2 * count
    assert not list(folder.rglob("*.tmp"))


# ---- merge


def _shards(tmp_path: Path, count: int = 2, **changes) -> list[Path]:
    pairs = [(model, task) for model in ("a", "b") for task in ("t1", "t2")]
    folders = []
    for index in range(count):
        folder = tmp_path / f"shard{index}"
        store = open_store(folder, shard=f"{index}/{count}", pairs=fingerprint(pairs), **(changes if index == count - 1 else {}))
        for model, task in pairs[index::count]:
            store.put(make_row(model, task), f"{model}-{task}\n")
        store.rebuild()
        folders.append(folder)
    return folders


def test_merge_writes_one_report_from_the_shards(tmp_path):
    summary = merge(_shards(tmp_path), tmp_path / "out", html=False)
    assert summary.pairs == 4 and summary.added == 4 and summary.replaced == [] and summary.missing == []
    assert len(result_rows(tmp_path / "out")) == 4 and len(list((tmp_path / "out").glob("samples_*.jsonl"))) == 4
    shards = S.Store.read(tmp_path / "out").read_manifest()["shards"]
    assert sorted(run["shard"] for run in shards) == ["0/2", "1/2"]


def test_merge_renders_the_page(tmp_path):
    summary = merge(_shards(tmp_path), tmp_path / "out")
    assert summary.page == tmp_path / "out" / "index.html"
    page = summary.page.read_text()
    assert all(f">{task}<" in page for task in ("t1", "t2")) and 'src="plots/' in page


def test_merge_reports_a_pair_two_shards_both_ran(tmp_path):
    first, second = _shards(tmp_path)
    open_store(second, shard="1/2", pairs=S.Store.read(first).read_manifest()["shards"][0]["pairs"]).put(make_row("a", "t1"))
    summary = merge([first, second], tmp_path / "out", html=False)
    assert summary.replaced == ["a-t1 (float32, k=4, seed 1)"] and summary.pairs == 4


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"versions": {**VERSIONS, "torch": "2.14.0"}}, "different setups (torch"),
        ({"settings": {**SETTINGS, "dtype": "bfloat16"}}, "setting dtype"),
    ],
)
def test_merge_refuses_a_mixture(tmp_path, changes, says):
    with pytest.raises(UsageError, match=r"cannot merge these report folders") as error:
        merge(_shards(tmp_path, **changes), tmp_path / "out")
    assert says in str(error.value) and not (tmp_path / "out").exists()


def test_merge_refuses_shards_cut_from_different_pair_sets(tmp_path):
    first, second = _shards(tmp_path)
    open_store(second, shard="1/2", pairs="another-set")
    with pytest.raises(UsageError, match="shards of 2 were cut from different sets"):
        merge([first, second], tmp_path / "out")


def test_merge_names_missing_shards_and_partial_merges_what_is_there(tmp_path):
    folders = _shards(tmp_path, count=3)
    with pytest.raises(UsageError, match=r"shard\(s\) 1/3 are missing"):
        merge([folders[0], folders[2]], tmp_path / "out")
    summary = merge([folders[0], folders[2]], tmp_path / "out", partial=True, html=False)
    assert summary.missing == ["1/3"] and "partial: shard(s) 1/3 missing" in "\n".join(summary.lines())


def test_merge_into_an_existing_report_of_another_setup_is_refused(tmp_path):
    open_store(tmp_path / "out", settings={**SETTINGS, "shots": 16}).put(make_row("z", "t"))
    with pytest.raises(UsageError, match="setting shots"):
        merge(_shards(tmp_path), tmp_path / "out")


# ---- the command line


def test_cli_merge_and_baseline(tmp_path):
    folders = _shards(tmp_path)
    done = run_cli("merge", *folders, "-o", "out", "--no-html", "--baseline", "baseline.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "merged into out: 4 pair(s), 4 added, 0 replaced" in done.stdout
    assert "baseline: wrote baseline.json (4 rows: 4 added" in done.stdout
    assert len(json.loads((tmp_path / "baseline.json").read_text())["rows"]) == 4


def test_cli_merge_refuses_a_mixture_with_exit_2_and_no_traceback(tmp_path):
    folders = _shards(tmp_path, versions={**VERSIONS, "transformers": "5.24.0"})
    done = run_cli("merge", *folders, "-o", "out", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot merge these report folders") and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_cli_merge_of_a_folder_that_is_no_report(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_cli("merge", "empty", "-o", "out", cwd=tmp_path)
    assert done.returncode == 2 and "is not a pytest-icl report store" in done.stderr


def test_rows_are_not_changed_by_a_round_trip(tmp_path):
    row = make_row(controls={"seeds": {"seeds": [1, 2]}})
    store = open_store(tmp_path / "r")
    store.put(copy.deepcopy(row))
    assert store.rows() == [row]


def test_a_folder_named_twice_is_merged_once_and_out_may_be_a_source(tmp_path):
    first, second = _shards(tmp_path)
    summary = merge([first, first, second], first, html=False)
    assert summary.pairs == 4 and summary.added == 2 and summary.replaced == []


def test_rebuild_of_a_folder_by_path(tmp_path):
    store = open_store(tmp_path / "r")
    store.put(make_row())
    assert S.rebuild(tmp_path / "r") is None and len(result_rows(tmp_path / "r")) == 1


def test_a_file_in_the_way_of_the_folder_is_a_usage_error(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(UsageError, match="cannot be a report folder"):
        open_store(tmp_path / "taken")
