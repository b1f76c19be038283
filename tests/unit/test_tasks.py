"""Tasks come from lm-eval definitions and render exactly as lm-eval renders them."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_icl.engine.encoding import encode_task
from pytest_icl.tasks import loading as tasks_module
from pytest_icl.tasks.loading import (
    NoValidationSplit,
    TaskDataMissing,
    TaskDefinitionError,
    TaskError,
    TaskSettingsError,
    TaskSource,
    TaskUnavailable,
    TaskWarning,
    builtin_task_exists,
    load_task,
    read_task_header,
)
from tests.tiny_models import make_tokenizer

ROOT = Path(__file__).resolve().parents[2]
ANTONYMS = ROOT / "tasks" / "antonym_choice" / "antonym_choice.yaml"
SENTIMENT = ROOT / "tasks" / "sentiment_blue_red" / "sentiment_blue_red.yaml"


pytestmark = pytest.mark.usefixtures("offline_datasets")


@pytest.mark.parametrize("path", [ANTONYMS, SENTIMENT])
def test_prompts_equal_lm_eval_fewshot_context(path, monkeypatch, tmp_path):
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(tmp_path)  # relative data files must resolve against the YAML, not the CWD
    task = load_task(TaskSource.from_path(path), shots=4, limit=5)
    # lm-eval itself on the shipped YAML, unchanged: its own sampler, pool order and documents
    name = read_task_header(path)["task"]
    lm_task = TaskManager(include_path=str(path.parent), include_defaults=False).load([name])["tasks"][name]
    lm_task.set_fewshot_seed(1234)  # as simple_evaluate does; first_n does not depend on it
    docs = [doc for _, doc in lm_task.doc_iterator(limit=5)]
    assert len(docs) == len(task.eval_examples) == 5
    for doc, example in zip(docs, task.eval_examples):
        assert task.prompt(example) == lm_task.fewshot_context(doc, 4)
        assert example.text == lm_task.doc_to_text(doc)


def test_demonstrations_are_the_first_k_of_a_seeded_shuffle():
    import datasets

    source = TaskSource.from_path(ANTONYMS)
    a = load_task(source, shots=6, seed=3)
    b = load_task(source, shots=8, seed=3)
    c = load_task(source, shots=6, seed=4)
    assert a.demonstrations == b.demonstrations[:6]
    assert a.demonstrations != c.demonstrations
    assert a.config_hash != c.config_hash
    # Dai et al.'s draw: Dataset.shuffle(seed), then the first k
    train = datasets.load_dataset("json", data_files=str(ANTONYMS.parent / "train.jsonl"))["train"]
    assert [d.text for d in a.demonstrations] == [f"{row['word']} ->" for row in train.shuffle(seed=3).select(range(6))]
    assert a.eval_examples == c.eval_examples  # the draw never changes what is scored


def test_icl_key_is_read_and_overridden():
    source = TaskSource.from_path(SENTIMENT)
    header = read_task_header(SENTIMENT)
    assert header["metadata"]["icl"]["lr"] == 1.0e-2 and header["num_fewshot"] == 16  # k is lm-eval's num_fewshot
    task = load_task(source, limit=3)
    assert (task.settings.shots, task.settings.lr) == (16, 1.0e-2)
    assert task.settings.thresholds == {"accuracy": 0.15}
    overridden = load_task(source, shots=2, lr=0.5, position="prompt", limit=3)
    assert (overridden.settings.shots, overridden.settings.lr, overridden.settings.position) == (2, 0.5, "prompt")
    assert len(overridden.eval_examples) == 3


def test_encoded_ids_decode_to_the_prompt():
    task = load_task(TaskSource.from_path(ANTONYMS), shots=3, limit=4)
    tokenizer = make_tokenizer()
    encoded = encode_task(task, tokenizer)
    for example, query in zip(task.eval_examples, encoded.queries):
        assert tokenizer.decode(list(encoded.icl_prefix) + list(query)) == task.prompt(example)
    for demo, (start, end) in zip(task.demonstrations, encoded.demo_spans):
        assert tokenizer.decode(list(encoded.icl_prefix[start:end])) == task.demonstration_text(demo)
    assert encoded.num_training_tokens == sum(len(s) - encoded.demo_offset for s in encoded.demo_sequences)


def _write_task(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(f'{{"text": "item {i}", "label": {i % 2}}}\n' for i in range(8)))
    (folder / "test.jsonl").write_text("".join(f'{{"text": "probe {i}", "label": {i % 2}}}\n' for i in range(4)))
    path = folder / "t.yaml"
    path.write_text(body)
    return path


BASE = """task: tiny
dataset_path: json
dataset_kwargs: {data_files: {train: train.jsonl, test: test.jsonl}}
output_type: multiple_choice
training_split: train
test_split: test
doc_to_text: "Text: {{text}} Label:"
doc_to_target: label
"""


def test_identical_choice_tokens_are_rejected(tmp_path):
    path = _write_task(tmp_path, BASE + 'doc_to_choice: ["same", "same"]\nmetadata: {icl: {shots: 2}}\n')
    task = load_task(TaskSource.from_path(path))
    with pytest.raises(TaskError, match="tokenise to the same ids"):
        encode_task(task, make_tokenizer())


def test_too_long_context_says_what_to_do(tmp_path):
    path = _write_task(tmp_path, BASE + 'doc_to_choice: ["no", "yes"]\nmetadata: {icl: {shots: 8}}\n')
    task = load_task(TaskSource.from_path(path))
    with pytest.raises(TaskError, match="Lower --icl-shots"):
        encode_task(task, make_tokenizer(), max_length=20)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("task: [unclosed", "not valid YAML"),
        ("dataset_path: json\n", "missing 'task:'"),
        (BASE + 'doc_to_choice: ["no", "yes"]\nmetadata: {icl: {shotz: 2}}\n', "unknown icl setting"),
        (BASE + 'doc_to_choice: ["no", "yes"]\nmetadata: {icl: {shots: 50}}\n', "only 8 examples"),
        (BASE.replace("multiple_choice", "generate_until") + 'doc_to_choice: ["no", "yes"]\n', "must be 'multiple_choice'"),
    ],
)
def test_malformed_tasks_give_clear_errors(tmp_path, body, message):
    path = _write_task(tmp_path, body)
    with pytest.raises(TaskError, match=message):
        load_task(TaskSource.from_path(path))


def test_local_data_override(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(6)))
    (tmp_path / "eval.csv").write_text("text,label\nfirst,0\nsecond,1\n")
    path = _write_task(tmp_path / "task", BASE + 'doc_to_choice: ["no", "yes"]\nmetadata: {icl: {shots: 2}}\n')
    task = load_task(TaskSource.from_path(path), data=f"{tmp_path / 'train.csv'},{tmp_path / 'eval.csv'}")
    assert sorted(e.text for e in task.eval_examples) == ["Text: first Label:", "Text: second Label:"]
    with pytest.raises(TaskError, match="no such file"):
        load_task(TaskSource.from_path(path), data="missing.csv,other.csv")


def test_hub_dataset_offline_is_unavailable_not_a_crash():
    with pytest.raises(TaskUnavailable, match="--icl-data"):
        load_task(TaskSource.from_path(ROOT / "tasks" / "paper" / "cb.yaml"))


def test_eval_examples_that_are_demonstrations_are_scored_as_lm_eval_scores_them_and_counted(tmp_path):
    rows = "".join(f'{{"text": "row {i}", "label": {i % 2}}}\n' for i in range(6))
    (tmp_path / "train.jsonl").write_text(rows)
    (tmp_path / "eval.jsonl").write_text(rows + '{"text": "fresh", "label": 1}\n')
    path = _write_task(tmp_path / "task", BASE + 'doc_to_choice: ["no", "yes"]\nmetadata: {icl: {shots: 4}}\n')
    data = f"{tmp_path / 'train.jsonl'},{tmp_path / 'eval.jsonl'}"

    with pytest.warns(TaskWarning, match="4 of 7 eval examples have the same prompt as a demonstration"):
        task = load_task(TaskSource.from_path(path), data=data)
    assert [e.text for e in task.eval_examples] == [f"Text: row {i} Label:" for i in range(6)] + ["Text: fresh Label:"]
    assert {d.text for d in task.demonstrations} < {e.text for e in task.eval_examples}
    assert task.draw == "the first 4 of split 'train' shuffled with seed 1"  # BASE has lm-eval's default sampler

    with pytest.warns(TaskWarning, match="2 of 2 eval examples"):
        assert len(load_task(TaskSource.from_path(path), data=data, limit=2).eval_examples) == 2  # lm-eval's first 2


def test_an_empty_eval_split_is_an_error(tmp_path):
    (tmp_path / "train.jsonl").write_text("".join(f'{{"text": "row {i}", "label": {i % 2}}}\n' for i in range(4)))
    (tmp_path / "empty.jsonl").write_text("")
    path = _write_task(tmp_path / "task", BASE + 'doc_to_choice: ["no", "yes"]\nmetadata: {icl: {shots: 2}}\n')
    with pytest.raises(TaskError):
        load_task(TaskSource.from_path(path), data=f"{tmp_path / 'train.jsonl'},{tmp_path / 'empty.jsonl'}")


# ---- bad inputs: one clear paragraph each, and the right kind of error


def test_a_task_without_doc_to_choice_says_what_to_add(tmp_path):
    path = _write_task(tmp_path, BASE)
    with pytest.raises(TaskDefinitionError) as error:
        load_task(TaskSource.from_path(path))
    assert "has no doc_to_choice" in str(error.value) and "Add doc_to_choice" in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_data_file_is_a_task_error_naming_the_file_not_unavailable(tmp_path):
    path = _write_task(tmp_path, BASE + 'doc_to_choice: ["no", "yes"]\nmetadata: {icl: {shots: 2}}\n')
    (tmp_path / "test.jsonl").unlink()
    with pytest.raises(TaskDataMissing) as error:
        load_task(TaskSource.from_path(path))
    assert not isinstance(error.value, TaskUnavailable)  # a skip is only for hub data that cannot be had offline
    assert f"the data file {tmp_path / 'test.jsonl'} (dataset_kwargs.data_files, split 'test') does not exist" in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"shots": 0}, "--icl-shots = 0 is not allowed"),
        ({"shots": -1}, "--icl-shots = -1 is not allowed"),
        ({"shots": 2.5}, "--icl-shots = 2.5 is not allowed"),
        ({"seed": "x"}, "--icl-seed = 'x' is not allowed"),
        ({"lr": math.nan}, "--icl-lr = nan is not allowed"),
        ({"lr": math.inf}, "--icl-lr = inf is not allowed"),
        ({"lr": -1.0}, "--icl-lr = -1.0 is not allowed"),
        ({"limit": 0}, "--icl-limit = 0 is not allowed"),
        ({"position": "middle"}, "--icl-position = 'middle' is not allowed"),
    ],
)
def test_bad_overrides_blame_the_option_not_the_task_file(tmp_path, overrides, message):
    path = _write_task(tmp_path, BASE + 'doc_to_choice: ["no", "yes"]\nmetadata: {icl: {shots: 2}}\n')
    with pytest.raises(TaskSettingsError, match=message.replace("(", r"\(")):
        load_task(TaskSource.from_path(path), **overrides)


@pytest.mark.parametrize(
    ("setting", "message"),
    [("shots: 2.5", "icl.shots = 2.5"), ("lr: .nan", "icl.lr = nan"), ("seed: 1.5", "icl.seed = 1.5"), ("lr: 0", "icl.lr = 0")],
)
def test_bad_file_settings_blame_the_file(tmp_path, setting, message):
    path = _write_task(tmp_path, BASE + f'doc_to_choice: ["no", "yes"]\nmetadata: {{icl: {{{setting}}}}}\n')
    with pytest.raises(TaskSettingsError, match=f"^{tmp_path / 't.yaml'}: {message} is not allowed"):
        load_task(TaskSource.from_path(path))


def test_lr_auto_is_kept_until_a_model_chooses_one(tmp_path):
    path = _write_task(tmp_path, BASE + 'doc_to_choice: ["no", "yes"]\nmetadata: {icl: {shots: 2, lr: auto}}\n')
    task = load_task(TaskSource.from_path(path), limit=2)
    assert task.settings.lr == "auto"
    chosen = task.with_lr(3e-3)
    assert chosen.settings.lr == 3e-3 and chosen.config_hash == task.config_hash and chosen.demonstrations == task.demonstrations
    assert load_task(TaskSource.from_path(path), lr="auto", limit=2).settings.lr == "auto"
    with pytest.raises(TaskSettingsError):
        task.with_lr(math.nan)


def test_asking_for_a_missing_validation_split_is_its_own_error(tmp_path):
    path = _write_task(tmp_path, BASE + 'doc_to_choice: ["no", "yes"]\nmetadata: {icl: {shots: 2}}\n')
    with pytest.raises(NoValidationSplit, match="no validation split"):
        load_task(TaskSource.from_path(path), split="validation")


def test_a_template_naming_a_missing_column_is_one_paragraph(tmp_path):
    path = _write_task(tmp_path, BASE.replace("{{text}}", "{{missing_column}}") + 'doc_to_choice: ["no", "yes"]\n')
    with pytest.raises(TaskError) as error:
        load_task(TaskSource.from_path(path))
    assert "\n" not in str(error.value)


# ---- the shipped YAMLs are plain lm-eval tasks

MADE_UP = ("antonym_choice", "sentiment_blue_red", "syllable_first", "topic_nonce")
PAPER = ("sst2", "sst5", "mr", "subj", "agnews", "cb")


def test_lm_eval_indexes_every_shipped_task_and_builds_the_made_up_ones(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(tmp_path)  # data files are read relative to the YAML, not the working directory
    manager = TaskManager(include_path=str(ROOT / "tasks"), include_defaults=False)
    assert set(MADE_UP + PAPER) <= set(manager.all_tasks)
    built = manager.load(list(MADE_UP))["tasks"]
    for name in MADE_UP:
        task = built[name]
        assert len(task.eval_docs) == 64 and len(task.fewshot_docs()) == 40 and len(task.validation_docs()) == 24
        assert task.config.num_fewshot == 16 and repr(task.fewshot_cfg.process_docs) == "pytest_icl.tasks.fewshot.shuffle_seed_1"
        assert "lr" in task.config.metadata["icl"]  # the settings ride along in metadata, unused by lm-eval


def test_lm_eval_command_line_runs_a_shipped_task(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    result = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "dummy", "--include_path", "tasks", "--tasks", "antonym_choice", "--limit", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "|antonym_choice|" in result.stdout.replace(" ", "")


def test_builtin_names_come_from_a_cached_index(tmp_path, monkeypatch):
    import lm_eval.tasks

    monkeypatch.setenv("PYTEST_ICL_CACHE", str(tmp_path))
    assert builtin_task_exists("sst2") and builtin_task_exists("cb")  # shipped paper tasks share these names
    assert not builtin_task_exists("antonym_choice") and not builtin_task_exists("sst5")
    index = tasks_module._builtin_index()
    assert index["glue"][0] == "TAG"
    assert index["sst2"][0] == "TASK" and Path(index["sst2"][1]).name == "default.yaml"
    [cache] = (tmp_path / "lm-eval").glob("index-*.json")

    built = []

    class FakeManager:
        def __init__(self):
            built.append(1)
            self.task_index = {"only_task": type("Entry", (), {"kind": type("K", (), {"name": "TASK"}), "yaml_path": None})}

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", FakeManager)
    assert builtin_task_exists("sst2") and not built  # read from the cache: no 5 s index
    cache.write_text("{damaged")
    assert builtin_task_exists("only_task") and not builtin_task_exists("sst2") and built == [1]  # rebuilt
    assert builtin_task_exists("only_task") and built == [1]  # and stored again
