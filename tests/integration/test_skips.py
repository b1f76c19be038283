"""A task whose data cannot be had offline: skipped when merely collected, a failure when asked for by name."""

from __future__ import annotations

import pytest

HUB_DATASET = "no-such-org/no-such-dataset"


@pytest.fixture
def offline_task(project):
    """A task reading a hub dataset; HF_HUB_OFFLINE=1 is set for every inner run (conftest)."""
    project.task("hubtask", dataset_path=HUB_DATASET, dataset_kwargs=None)
    return project


def test_collected_task_without_data_is_skipped_with_its_reason(offline_task):
    result = offline_task.run("-rs")

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=5)
    result.stdout.fnmatch_lines(
        [
            f"SKIPPED [[]*] *hubtask.yaml: its data cannot be loaded (ConnectionError: Couldn't reach '{HUB_DATASET}'*"
            "Download the dataset while online*or run it on local files with --icl-data TASK=DIR (train.*, validation.*, test.*)*"
        ]
    )


def test_named_task_without_data_fails(offline_task):
    result = offline_task.run("--icl-task", "hubtask")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=5)  # raised while setting up the icl_analysis fixture
    result.stdout.fnmatch_lines([f"*hubtask.yaml: its data cannot be loaded*Couldn't reach '{HUB_DATASET}'*--icl-data*"])
    result.stdout.no_fnmatch_line("*Traceback*")
    assert "During handling of the above exception" not in result.stdout.str()  # one message, no exception chain


def test_the_summary_says_once_per_task_why_it_was_skipped(offline_task, plugin_args):
    """Without -rs: one line per task (not per item), with the --icl-data fix spelled for this task."""
    result = offline_task.run(*plugin_args)

    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=5)
    result.stdout.fnmatch_lines(
        [
            "*- tasks skipped (-rs lists the items) -*",
            f"hubtask: its data cannot be loaded (ConnectionError: Couldn't reach '{HUB_DATASET}'*--icl-data hubtask=DIR (train.*",
        ]
    )
    assert sum(line.startswith("hubtask: ") for line in result.outlines) == 1
    result.stdout.no_fnmatch_line("SKIPPED [[]*")  # pytest's own list needs -rs
