"""The demonstrations are the ones lm-eval picks: its k, its pool, its first_n sampler, a seeded shuffle it runs itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_icl.tasks import fewshot
from pytest_icl.tasks.fewshot import ShuffledPool, pool_seed
from pytest_icl.tasks.loading import TaskDefinitionError, TaskSettingsError, TaskSource, load_task, read_task_header

ROOT = Path(__file__).resolve().parents[2]
ANTONYMS = ROOT / "tasks" / "antonym_choice" / "antonym_choice.yaml"


pytestmark = pytest.mark.usefixtures("offline_datasets")


def _lm_eval_task(folder: Path, name: str):
    """lm-eval's own task object, built from the YAML files in ``folder`` as ``lm_eval --include_path`` builds it."""
    from lm_eval.tasks import TaskManager

    task = TaskManager(include_path=str(folder), include_defaults=False).load([name])["tasks"][name]
    task.set_fewshot_seed(1234)  # what simple_evaluate does before it builds the contexts
    return task


def _user_task(folder: Path, body: str = "", *, train: int = 20, test: int = 6) -> Path:
    """A plain lm-eval YAML as a user writes it: no pytest-icl settings, first_n, num_fewshot: 5."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(f'{{"text": "train {i}", "label": {i % 2}}}\n' for i in range(train)))
    (folder / "test.jsonl").write_text("".join(f'{{"text": "test {i}", "label": {i % 2}}}\n' for i in range(test)))
    path = folder / "user.yaml"
    path.write_text(
        "task: user\ndataset_path: json\n"
        f"dataset_kwargs: {{data_files: {{train: {folder / 'train.jsonl'}, test: {folder / 'test.jsonl'}}}}}\n"
        "output_type: multiple_choice\ntraining_split: train\nfewshot_split: train\ntest_split: test\n"
        'doc_to_text: "Text: {{text}} Label:"\ndoc_to_target: label\ndoc_to_choice: ["no", "yes"]\n'
        + (body or "fewshot_config: {sampler: first_n}\nnum_fewshot: 5\n")
    )
    return path


def _texts(examples) -> list[str]:
    return [e.text for e in examples]


# ---- the seeded pool: a function lm-eval resolves from the YAML


def test_shuffle_seed_names_are_seeded_pools_with_a_stable_repr():
    import datasets

    assert fewshot.shuffle_seed_7 == ShuffledPool(7) and fewshot.shuffle_seed_7.seed == 7
    assert repr(ShuffledPool(7)) == "pytest_icl.tasks.fewshot.shuffle_seed_7" == repr(fewshot.shuffle_seed_7)
    for missing in ("shuffle_seed_0", "shuffle_seed_07", "shuffle_seed_x", f"shuffle_seed_{2**32}"):
        with pytest.raises(AttributeError):
            getattr(fewshot, missing)  # seed 0 is the pool unshuffled: a YAML without process_docs
    dataset = datasets.Dataset.from_dict({"i": list(range(30))})
    assert ShuffledPool(3)(dataset)["i"] == dataset.shuffle(seed=3)["i"] != dataset["i"]
    evens = ShuffledPool(3, after=lambda d: d.filter(lambda row: row["i"] % 2 == 0))
    assert evens(dataset)["i"] == dataset.filter(lambda row: row["i"] % 2 == 0).shuffle(seed=3)["i"]


def test_lm_eval_itself_picks_the_first_k_of_the_seeded_pool_whatever_its_fewshot_seed():
    import datasets

    train = datasets.load_dataset("json", data_files=str(ANTONYMS.parent / "train.jsonl"))["train"]
    expected = list(train.shuffle(seed=1))[:16]  # Dai et al.: Dataset.shuffle(seed), first k
    task = _lm_eval_task(ANTONYMS.parent, "antonym_choice")
    assert task.fewshot_cfg.process_docs == ShuffledPool(1)
    for seed in (1234, 0, None):
        task.set_fewshot_seed(seed)
        assert list(task.sampler.sample(n=16)) == expected
    ours = load_task(TaskSource.from_path(ANTONYMS), limit=2)
    assert _texts(ours.demonstrations) == [f"{row['word']} ->" for row in expected]
    assert (ours.settings.shots, ours.settings.seed, ours.notes) == (16, 1, ())


def test_collection_reads_the_seed_from_the_yaml_without_lm_eval():
    process_docs = read_task_header(ANTONYMS)["fewshot_config"]["process_docs"]
    assert process_docs == "!function pytest_icl.tasks.fewshot.shuffle_seed_1"
    assert pool_seed(process_docs) == 1 and pool_seed(ShuffledPool(4)) == 4
    assert pool_seed("!function utils.process_docs") is None and pool_seed(None) is None


# ---- k and the set from a user's lm-eval YAML


def test_a_user_yaml_with_num_fewshot_5_runs_with_k_5_and_lm_evals_own_set(tmp_path):
    path = _user_task(tmp_path)
    task = load_task(TaskSource.from_path(path))
    assert (task.settings.shots, task.settings.seed, task.notes) == (5, 0, ())
    assert _texts(task.demonstrations) == [f"Text: train {i} Label:" for i in range(5)]  # first_n in file order
    theirs = _lm_eval_task(tmp_path, "user")
    assert [theirs.doc_to_text(d) for d in theirs.sampler.sample(n=5)] == _texts(task.demonstrations)
    assert task.prompt(task.eval_examples[0]) == theirs.fewshot_context(theirs.eval_docs[0], 5)
    assert task.draw == "the first 5 of split 'train' in file order"


@pytest.mark.parametrize(
    ("icl", "override", "k", "says"),
    [
        (
            "metadata: {icl: {shots: 3}}\n",
            None,
            3,
            "k = 3 (metadata.icl.shots); the YAML's num_fewshot is 5, which lm-eval runs unless given --num_fewshot 3",
        ),
        ("", 2, 2, "k = 2 (--icl-shots / icl_shots); the YAML's num_fewshot is 5"),
        ("metadata: {icl: {shots: 5}}\n", None, 5, None),
    ],
    ids=["icl-shots", "option", "agreeing"],
)
def test_shots_override_num_fewshot_and_the_task_says_so(tmp_path, icl, override, k, says):
    path = _user_task(tmp_path, "fewshot_config: {sampler: first_n}\nnum_fewshot: 5\n" + icl)
    task = load_task(TaskSource.from_path(path), shots=override)
    assert task.settings.shots == len(task.demonstrations) == k
    if says is None:
        assert task.notes == ()
    else:
        [note] = task.notes
        assert note.startswith(says)


def test_a_yaml_without_num_fewshot_gets_the_default_k_and_says_lm_eval_runs_it_zero_shot(tmp_path):
    path = _user_task(tmp_path, "fewshot_config: {sampler: first_n}\n")
    task = load_task(TaskSource.from_path(path))
    assert task.settings.shots == 16
    assert any("the YAML sets no num_fewshot, so lm-eval runs it zero-shot" in n for n in task.notes)


def test_the_default_sampler_is_replaced_by_one_stated_fixed_set(tmp_path):
    import datasets

    path = _user_task(tmp_path, "num_fewshot: 4\n")  # no fewshot_config: lm-eval draws a new set per document
    task = load_task(TaskSource.from_path(path))
    train = datasets.load_dataset("json", data_files=str(tmp_path / "train.jsonl"))["train"]
    assert _texts(task.demonstrations) == [f"Text: {row['text']} Label:" for row in train.shuffle(seed=1).select(range(4))]
    [note] = task.notes
    assert "sampler (default) shows every eval document its own random 4" in note and "seed 1" in note
    assert "process_docs: !function pytest_icl.tasks.fewshot.shuffle_seed_1" in task.lm_eval_yaml


def test_icl_seed_on_a_plain_first_n_yaml_shuffles_and_says_lm_eval_would_not(tmp_path):
    path = _user_task(tmp_path, "fewshot_config: {sampler: first_n}\nnum_fewshot: 5\nmetadata: {icl: {seed: 3}}\n")
    task = load_task(TaskSource.from_path(path))
    assert task.settings.seed == 3 and _texts(task.demonstrations) != [f"Text: train {i} Label:" for i in range(5)]
    assert task.notes == ("demonstrations: seed 3; lm-eval run on the YAML as written takes the first 5 of the pool in file order",)


def test_an_icl_seed_that_disagrees_with_the_yamls_shuffle_is_an_error(tmp_path):
    body = "fewshot_config: {sampler: first_n, process_docs: !function pytest_icl.tasks.fewshot.shuffle_seed_2}\nnum_fewshot: 5\n"
    with pytest.raises(TaskSettingsError, match="icl.seed is 3 but fewshot_config.process_docs shuffles the pool with seed 2"):
        load_task(TaskSource.from_path(_user_task(tmp_path / "a", body + "metadata: {icl: {seed: 3}}\n")))
    assert load_task(TaskSource.from_path(_user_task(tmp_path / "b", body + "metadata: {icl: {seed: 2}}\n"))).settings.seed == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("fewshot_config: {sampler: balanced}\nnum_fewshot: 2\n", "sampler 'balanced' decides per eval document"),
        ("fewshot_config: {sampler: first_n}\nfewshot_split: test\nnum_fewshot: 2\n", "the split that is scored"),
        (
            'fewshot_config: {sampler: first_n}\nnum_fewshot: 2\ndescription: "{{text}}: "\n',
            "is not description \\+ demonstrations \\+ query",
        ),
        (
            'fewshot_config: {sampler: first_n, fewshot_delimiter: " | "}\nnum_fewshot: 2\n',
            "is not description \\+ demonstrations \\+ query",
        ),
    ],
    ids=["sampler", "pool-is-eval-split", "per-document-description", "demo-delimiter"],
)
def test_what_lm_eval_renders_otherwise_is_refused_not_approximated(tmp_path, body, message):
    with pytest.raises(TaskDefinitionError, match=message):
        load_task(TaskSource.from_path(_user_task(tmp_path, body)))


def test_demonstrations_with_their_own_template_are_rendered_as_lm_eval_renders_them(tmp_path):
    path = _user_task(tmp_path, 'fewshot_config: {sampler: first_n, doc_to_text: "Q: {{text}} A:"}\nnum_fewshot: 2\n')
    task = load_task(TaskSource.from_path(path), limit=2)
    assert _texts(task.demonstrations) == ["Q: train 0 A:", "Q: train 1 A:"] and task.eval_examples[0].text == "Text: test 0 Label:"
    theirs = _lm_eval_task(tmp_path, "user")
    assert task.prompt(task.eval_examples[0]) == theirs.fewshot_context(theirs.eval_docs[0], 2)


def test_a_constant_description_is_lm_evals(tmp_path):
    path = _user_task(tmp_path, 'fewshot_config: {sampler: first_n}\nnum_fewshot: 2\ndescription: "Sort these.\\n\\n"\n')
    task = load_task(TaskSource.from_path(path))
    assert task.description == "Sort these.\n\n" and task.prompt(task.eval_examples[0]).startswith("Sort these.\n\nText: train 0")


# ---- the draws of a pair: same documents, each draw a YAML lm-eval runs


@pytest.mark.parametrize("path", [ANTONYMS, "user"])
def test_every_draw_scores_the_same_documents_and_lm_eval_shows_its_demonstrations(tmp_path, path):
    source = TaskSource.from_path(_user_task(tmp_path / "task") if path == "user" else path)
    draws = {seed: load_task(source, shots=3, seed=seed, limit=4) for seed in (0, 1, 2, 3)}
    assert len({d.eval_examples for d in draws.values()}) == 1  # ZSL runs once for all draws
    assert len({tuple(_texts(d.demonstrations)) for d in draws.values()}) == 4
    for seed, task in draws.items():
        folder = tmp_path / f"draw{seed}"
        folder.mkdir()
        name = f"{source.name}_k3_seed{seed}"
        (folder / f"{name}.yaml").write_text(task.lm_eval_yaml)
        theirs = _lm_eval_task(folder, name)
        assert [theirs.doc_to_text(d) for d in theirs.sampler.sample(n=3)] == _texts(task.demonstrations), seed
        docs = [doc for _, doc in theirs.doc_iterator(limit=4)]
        assert [theirs.fewshot_context(d, 3) for d in docs] == [task.prompt(e) for e in task.eval_examples]


def test_the_header_notes_are_the_loaded_tasks_without_lm_eval(tmp_path):
    from pytest_icl.tasks.fewshot import header_notes

    source = TaskSource.from_path(_user_task(tmp_path, "fewshot_config: {sampler: first_n}\nnum_fewshot: 5\nmetadata: {icl: {shots: 3}}\n"))
    assert header_notes(source) == load_task(source).notes != ()
    assert header_notes(source, shots=4, seed=2) == load_task(source, shots=4, seed=2).notes
    assert header_notes(TaskSource.from_path(ANTONYMS)) == () and header_notes(TaskSource.builtin("sst2")) == ()
