"""Task files that cannot work give errors that name the file (or task) and say what to do."""

from __future__ import annotations

import pytest

from tests.integration.icl_project import antonym_rows


def write_yaml(project, text: str):
    path = project.path / "tasks" / "broken" / "broken.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task: broken\ndoc_to_text: [unclosed\n", "* is not valid YAML: *"),
        ("dataset_path: json\noutput_type: multiple_choice\n", "*: missing 'task:' name (a string)"),
        ("task: broken\nicl: 16\n", "*: 'icl:' must be a mapping"),
        ("- task: broken\n", "*: a task file must be a YAML mapping with a 'task:' name"),
    ],
    ids=["invalid-yaml", "no-task-name", "icl-not-a-mapping", "not-a-mapping"],
)
def test_unreadable_task_file_is_a_collection_error(project, text, message):
    path = write_yaml(project, text)

    result = project.run()

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR collecting tasks/broken/broken.yaml*", str(path) + message.lstrip("*")])


def test_unknown_key_under_icl_names_the_file_and_the_known_keys(project):
    path = project.task("typo", icl={"shot": 8})

    result = project.run("-k", "accuracy")

    # caught once, while collecting the file, before any model or data is loaded
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR collecting tasks/typo/typo.yaml*", f"{path}: unknown key(s) under 'icl:': shot (known: *lr, position, seed, shots, thresholds*)"]
    )


def test_tasks_this_model_cannot_run_say_what_to_change(project):
    """Identical choices, a prompt longer than the model's 256 positions, more shots than examples."""
    rows = antonym_rows()
    project.task("twins", rows=[{**row, "choices": [row["choices"][0]] * 2} for row in rows])
    project.task("verbose", rows=[{**row, "word": " ".join([row["word"]] * 40)} for row in rows])
    project.task("greedy", icl={"shots": 12})  # 8 training rows

    result = project.run("-k", "accuracy")

    result.assert_outcomes(errors=3, deselected=12)
    result.stdout.fnmatch_lines_random(
        [
            "twins: choices [[]'*', '*'] tokenise to the same ids with this tokenizer, so they cannot be told apart. "
            "Use label words that differ in their tokens.",
            "verbose: the 4-shot prompt needs * tokens, but the model takes at most 256. "
            "Lower --icl-shots (or icl.shots in the task YAML) or use shorter examples.",
            "*greedy.yaml: 12 shots asked, but the few-shot split has only 8 examples",
        ]
    )
