"""What pytest collects from task files (pytester in this process, ``--collect-only``: no model is loaded).

Models are hub ids that are only resolved, never downloaded, so collection runs offline and fast.
"""

from __future__ import annotations

import pytest

from pytest_icl import catalogue
from pytest_icl.plugin.collection import IclItem, PropertyFailed

MODELS = ("--icl-model=org/first", "--icl-model=org/second")
PROPERTIES = [p.name for p in catalogue.PROPERTIES]
TASK = "task: {name}\noutput_type: multiple_choice\ndoc_to_text: '{{{{word}}}}'\ndoc_to_choice: [a, b]\ndoc_to_target: 0\n"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\n")  # anchors rootdir: the default task folder is <project>/tasks
    return pytester


def write_task(pytester: pytest.Pytester, name: str, *, folder: str = "tasks", icl: str = "") -> None:
    path = pytester.path / folder / name / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TASK.format(name=name) + (f"metadata: {{icl: {icl}}}\n" if icl else ""))


def collect(pytester: pytest.Pytester, *args: str, models: tuple[str, ...] = MODELS) -> list[IclItem]:
    """The session's items after collection (filtered and ordered by the plugin's hooks)."""
    recorder = pytester.inline_run(*models, *args, "--collect-only")
    [finish] = recorder.getcalls("pytest_collection_finish")
    return list(finish.session.items)


def test_a_task_file_is_one_item_per_model_and_property(project):
    write_task(project, "antonyms")
    items = collect(project)
    assert [item.nodeid for item in items] == [
        f"tasks/antonyms/antonyms.yaml::test_icl[{model}-antonyms-{name}]" for model in ("org--first", "org--second") for name in PROPERTIES
    ]
    first = items[0]
    assert first.icl_case.pair == "org--first-antonyms" and first.icl_case.property_name == "accuracy"
    assert first.get_closest_marker("icl") is not None
    # Each item knows how many items its pair has: the controller writes a pair's files when all have reported.
    assert first.icl_payload["property"] == {
        "pair": "org--first-antonyms",
        "task": "antonyms",
        "name": "accuracy",
        "items": len(PROPERTIES),
    }


def test_items_are_ordered_so_each_model_loads_once(project):
    write_task(project, "antonyms")
    write_task(project, "synonyms")
    models = [item.icl_case.model.id for item in collect(project)]
    assert models == ["org--first"] * 2 * len(PROPERTIES) + ["org--second"] * 2 * len(PROPERTIES)


def test_controls_with_a_verdict_are_items_too(project):
    write_task(project, "antonyms")
    names = [item.icl_case.property_name for item in collect(project, "--icl-controls=shuffled,lcgd,output")]
    assert names[: len(PROPERTIES) + 2] == [*PROPERTIES, "shuffled", "output"]  # lcgd is reported, not judged
    assert catalogue.control("lcgd").verdict is False


def test_expected_failures_are_non_strict_xfails_of_a_failed_property_only(project):
    write_task(project, "antonyms", icl="{expected_failures: {kendall: measured 0.01 below its control}}")
    items = {item.icl_case.property_name: item for item in collect(project, models=("--icl-model=org/first",))}
    marker = items["kendall"].get_closest_marker("xfail")
    assert marker.kwargs == {"reason": "known not to hold: measured 0.01 below its control", "strict": False, "raises": PropertyFailed}
    assert items["simaou"].get_closest_marker("xfail") is None


@pytest.mark.parametrize(("icl", "message"), [
    ("{expected_failures: {simaoo: typo}}", "*antonyms.yaml: expected_failures names unknown properties [[]'simaoo'[]]; known: accuracy*"),
    ("{thresholds: {simaoo: 0.1}}", "*antonyms.yaml: unknown threshold name(s) [[]'simaoo'[]] in the task's icl.thresholds*"),
    ("{shots: 0}", "*antonyms.yaml*shots*"),
])  # fmt: skip
def test_a_bad_task_file_is_a_collection_error_naming_it(project, icl, message):
    write_task(project, "antonyms", icl=icl)
    result = project.runpytest(*MODELS, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # pytest's code for errors during collection
    result.stdout.fnmatch_lines([message])


def test_only_task_files_in_the_task_folders_or_named_are_collected(project):
    write_task(project, "antonyms")
    write_task(project, "elsewhere", folder="other")
    (project.path / "tasks" / "main.yml").write_text("- name: install nginx\n  apt: {name: nginx}\n")  # not ours: left alone
    assert {item.icl_case.task.name for item in collect(project)} == {"antonyms"}
    named = collect(project, "other/elsewhere/elsewhere.yaml")
    assert {item.icl_case.task.name for item in named} == {"elsewhere"}


def test_icl_task_keeps_the_named_tasks_and_finds_one_not_collected(project):
    """In a subprocess: the report header asks lm-eval whether a built-in has the name, and
    pytester would unload what that imports when this in-process run ends."""
    write_task(project, "antonyms")
    write_task(project, "synonyms")
    project.mkpydir("unrelated")

    def node_ids(*args: str) -> list[str]:
        result = project.runpytest_subprocess(*MODELS, *args, "--collect-only", "-q")
        return [line for line in result.outlines if "::" in line]

    assert {node.split("::")[0] for node in node_ids("--icl-task=synonyms")} == {"tasks/synonyms/synonyms.yaml"}
    found = node_ids("unrelated", "--icl-task=antonyms")  # the task folder is not on the command line
    assert {node.split("::")[0] for node in found} == {"tasks/antonyms/antonyms.yaml"} and len(found) == 2 * len(PROPERTIES)


def test_two_models_with_one_id_are_a_usage_error(project):
    result = project.runpytest("--icl-model=org/same", "--icl-model=org/same", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --icl-model: more than one model has the test id org--same; each model must be named once*"])


# ---- what collection checks once: task names, one file per name, --icl-data names


@pytest.mark.parametrize(("name", "shown"), [
    ("'../../escape'", "'../../escape'"), ("'my task'", "'my task'"), ("'a/b'", "'a/b'"), ("'x' * 101", "'xxxx"), ("'.hidden'", "'.hidden'"),
])  # fmt: skip
def test_a_task_name_that_cannot_name_a_file_is_a_collection_error(project, name, shown):
    """The name makes the report's file names and the test ids: refused at collection, with a name that would do."""
    path = project.path / "tasks" / "odd" / "odd.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(TASK.format(name="placeholder").replace("task: placeholder", f"task: {eval(name)!r}"))
    result = project.runpytest(*MODELS, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*odd.yaml: the task name {shown}* cannot be used: it names the test ids and the report's files*"])
    assert not list(project.path.glob("**/escape*"))


def test_two_task_files_with_one_name_are_a_collection_error_naming_both(project):
    write_task(project, "antonyms")
    write_task(project, "antonyms", folder="tasks/copy")
    result = project.runpytest(*MODELS, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*task 'antonyms' is defined by two files, */tasks/antonyms/antonyms.yaml and */tasks/copy/antonyms/antonyms.yaml;*"]
    )


def test_a_fixed_choice_list_of_one_is_a_collection_error(project):
    path = project.path / "tasks" / "single" / "single.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(TASK.format(name="single").replace("doc_to_choice: [a, b]", "doc_to_choice: [a]"))
    result = project.runpytest(*MODELS, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*single.yaml: doc_to_choice: [[]'a'[]] has 1 choice; * a task needs at least 2"])


def _data_folder(project) -> str:
    folder = project.path / "data"
    folder.mkdir()
    rows = '{"word": "hot", "label": 0}\n{"word": "big", "label": 1}\n'
    (folder / "train.jsonl").write_text(rows)
    (folder / "test.jsonl").write_text(rows)
    return str(folder)


def test_an_icl_data_name_that_matches_no_task_is_a_usage_error_with_the_closest(project):
    write_task(project, "antonyms")
    write_task(project, "synonyms")
    result = project.runpytest(*MODELS, "--collect-only", "--icl-data", f"antonym={_data_folder(project)}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --icl-data antonym=*: no task of this run is named 'antonym', so the files would never be read; did you mean 'antonyms'*"]
    )


def test_icl_data_names_a_collected_task_even_when_k_deselects_it(project):
    write_task(project, "antonyms")
    write_task(project, "synonyms")
    data = _data_folder(project)
    result = project.runpytest(*MODELS, "--collect-only", "-q", "--icl-data", f"antonyms={data}", "-k", "synonyms")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()


def test_icl_data_may_name_the_task_of_a_marked_test(project):
    project.makepyfile(
        test_mine="""
        import pytest

        @pytest.mark.icl_task({"task": "inline_words", "output_type": "multiple_choice"})
        def test_words(icl_analysis):
            pass
        """
    )
    write_task(project, "antonyms")
    result = project.runpytest(*MODELS, "--collect-only", "-q", "--icl-data", f"inline_words={_data_folder(project)}")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
