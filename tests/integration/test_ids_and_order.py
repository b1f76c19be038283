"""Item ids ``test_icl[<model>-<task>-<property>]``, their order, and selecting them."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.integration.icl_project import SUITE_MODELS, reported, suite_ids


def collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line]


def test_ids_name_model_task_and_property(project):
    project.task()

    result = project.run(
        "--collect-only", "-q", "--icl-model=GPT2", "--icl-model=EleutherAI/gpt-neo-125M@main", "--icl-model=no-such-org/model"
    )  # nothing is loaded at collection, so hub ids need no network

    assert result.ret == pytest.ExitCode.OK
    stems = [line.split("[")[1].rstrip("]") for line in collected(result)]
    assert stems == [
        f"{model}-antonyms-{prop}"
        for model in ("tiny-gpt2", "gpt2", "EleutherAI--gpt-neo-125M@main", "no-such-org--model")
        for prop in ("accuracy", "rec2ftp", "simaou", "simam", "kendall")
    ]


def test_items_are_grouped_by_model_so_each_model_loads_once(project, tiny_gpt_neo):
    for name in ("antonyms", "opposites"):
        project.task(name)

    result = project.run("--collect-only", "-q", f"--icl-model={tiny_gpt_neo}")

    assert collected(result) == suite_ids()


@pytest.mark.parametrize(
    ("expression", "count"),
    [(("-k", "tiny-gpt-neo and simam"), 2), (("-k", "opposites and not kendall"), 8), (("-m", "icl"), 20), (("-m", "not icl"), 0)],
    ids=["k-model-property", "k-task", "m-icl", "m-not-icl"],
)
def test_select_items_by_keyword_and_marker(project, tiny_gpt_neo, expression, count):
    for name in ("antonyms", "opposites"):
        project.task(name)

    result = project.run("--collect-only", "-q", f"--icl-model={tiny_gpt_neo}", *expression)

    assert len(collected(result)) == count
    assert all(re.search(r"test_icl\[tiny-(gpt2|gpt-neo)-(antonyms|opposites)-\w+\]$", line) for line in collected(result))


def test_run_reports_every_item_under_its_id(suite_run):
    """Same ids with and without xdist; accuracy=-1 always passes, simam=2 always fails."""
    lines = reported(suite_run.result)

    assert sorted(line.node for line in lines) == sorted(suite_ids())
    assert {line.outcome for line in lines} <= {"PASSED", "FAILED", "UNDECIDED"}
    assert {line.outcome for line in lines if line.node.endswith("-accuracy]")} == {"PASSED"}
    assert {line.outcome for line in lines if line.node.endswith("-simam]")} == {"FAILED"}
    outcomes = suite_run.result.parseoutcomes()
    assert sum(outcomes.get(k, 0) for k in ("passed", "failed", "undecided")) == 20, outcomes


def test_serial_run_executes_one_model_after_the_other(serial_run):
    models = [line.node.split("[")[1].split("-anto")[0].split("-oppo")[0] for line in reported(serial_run.result)]

    assert models == [SUITE_MODELS[0]] * 10 + [SUITE_MODELS[1]] * 10


def test_two_models_with_the_same_folder_name_are_refused(project, tiny_gpt2, tmp_path):
    project.task()
    twin = shutil.copytree(tiny_gpt2, tmp_path / "elsewhere" / tiny_gpt2.name)  # e.g. a finetuned copy

    result = project.run("--collect-only", "-q", f"--icl-model={twin}")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tiny-gpt2*"])
