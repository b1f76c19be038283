"""Verdicts a researcher can trust: opt-in control items, the accuracy gate, lr: auto per model."""

from __future__ import annotations

import json

import pytest

from tests.integration.icl_project import antonym_rows, run_pytest, write_jsonl, write_task

CONTROL_ITEMS = ("untrained", "shuffled", "seeds", "output")


@pytest.fixture(scope="module")
def controls_run(tmp_path_factory, tiny_gpt2):
    """One run with every control, two seeds, and lr: auto on a task that has a validation split."""
    folder = tmp_path_factory.mktemp("controls")
    path = write_task(
        folder / "tasks", "antonyms",
        validation_split="validation",
        dataset_kwargs={"data_files": {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"}},
    )  # fmt: skip
    write_jsonl(path.parent / "validation.jsonl", antonym_rows()[8:12])
    args = [
        f"--icl-model={tiny_gpt2}", "--icl-limit", "4", "--icl-controls", "untrained,shuffled,lcgd", "--icl-controls", "seeds,output",
        "--icl-seeds", "2", "--icl-shuffled=on", "--icl-lr", "auto", "--icl-threshold", "accuracy=-1", f"--icl-report={folder / 'out'}", "-rA", "-v",
    ]  # fmt: skip
    result = run_pytest(folder, *args)
    row = json.loads((folder / "out" / "results.json").read_text())["rows"][0] if (folder / "out" / "results.json").exists() else None
    return result, row


def test_each_control_is_an_item_of_the_pair(controls_run):
    result, _ = controls_run
    text = result.stdout.str()
    for name in CONTROL_ITEMS:
        assert f"test_icl[tiny-gpt2-antonyms-{name}]" in text, text[-2000:]
    assert "test_icl[tiny-gpt2-antonyms-lcgd]" not in text  # reported beside GD, no verdict
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) == 0, text[-3000:]
    decided = sum(outcomes.get(k, 0) for k in ("passed", "failed", "undecided", "inconclusive"))
    assert decided == 5 + len(CONTROL_ITEMS), outcomes


def test_controls_are_in_the_row_and_the_table(controls_run):
    result, row = controls_run
    controls = row["controls"]
    assert set(controls) == {"untrained", "shuffled", "lcgd", "seeds", "output"}
    assert set(controls["untrained"]["values"]) == {"no_training", "trained_embeddings"}
    assert controls["seeds"]["seeds"] == [0, 1]  # a first_n task's own seed is 0: the pool in file order
    assert {"mean", "sd"} <= set(controls["seeds"]["metrics"]["simaou"])
    assert all(o["passed"] is None and o["outcome"] is None for o in controls["lcgd"]["outcomes"])
    # every control item is decided over the draws, with the interval of each check in the row
    for name in ("untrained", "shuffled", "output"):
        assert controls[name]["verdict"]["outcome"] in ("passed", "failed", "undecided", "inconclusive")
        assert all({"estimate", "low", "high", "outcome"} <= set(o) for o in controls[name]["outcomes"])
    result.stdout.fnmatch_lines(["*controls (--icl-controls)*", "model*task*control*check*real*control*verdict*"])
    result.stdout.fnmatch_lines(["tiny-gpt2*antonyms*shuffled*SimAOU above FT on shuffled labels*"])


def test_lr_auto_is_chosen_on_validation_and_shown(controls_run):
    result, row = controls_run
    assert row["lr_source"] == "validation"
    assert "validation" in row["lr_reason"] or row["lr_reason"]
    result.stdout.fnmatch_lines([f"tiny-gpt2  antonyms  4  4  2 * {row['lr']:g} auto*"])


@pytest.mark.parametrize("gate", ["on", "off"])
def test_the_accuracy_gate_makes_similarity_verdicts_inconclusive(project, gate):
    """accuracy=2 can never hold, and a random model shows no ICL effect: with the gates on, the similarity items are inconclusive."""
    project.task()

    result = project.run("--icl-threshold", "accuracy=2", "--icl-accuracy-gate", gate, "--icl-report", "out", "-rs")

    row = json.loads((project.path / "out" / "results.json").read_text())["rows"][0]
    if gate == "on":
        # A random tiny model has no ICL effect: the gate closes whatever the accuracy margin is.
        outcomes = result.parseoutcomes()
        assert (outcomes.get("failed"), outcomes.get("inconclusive"), outcomes.get("skipped", 0)) == (1, 4, 0), outcomes
        result.stdout.fnmatch_lines(["*tiny-gpt2-antonyms: icl_effect closed: *ICL does not clearly beat*"])
        assert {row["properties"][name] for name in ("rec2ftp", "simaou", "simam", "kendall")} == {"inconclusive"}
        result.stdout.fnmatch_lines(["tiny-gpt2  antonyms*FAIL accuracy inconclusive rec2ftp,simaou,simam,kendall"])
    else:
        outcomes = result.parseoutcomes()
        assert outcomes.get("inconclusive", 0) == 0 and outcomes["failed"] >= 1
        assert "inconclusive" not in row["properties"].values()
