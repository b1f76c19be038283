"""A model that cannot be loaded fails fast, naming the model and saying how to get it; no traceback wall."""

from __future__ import annotations

import pytest

HUB_MODEL = "no-such-org/no-such-model"


def test_models_that_cannot_be_loaded_fail_saying_what_to_do(project, tmp_path):
    """A hub id that is not cached (HF_HUB_OFFLINE=1 is set for every inner run), and a folder holding a GGUF file."""
    project.task()
    folder = tmp_path / "downloaded"
    folder.mkdir()
    (folder / "model.Q4_K_M.gguf").write_bytes(b"GGUF")

    result = project.run("-k", "accuracy or simaou", f"--icl-model={folder}", model=HUB_MODEL)

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=4, deselected=6)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of *test_icl[[]no-such-org--no-such-model-antonyms-accuracy]*",
            f"hub model '{HUB_MODEL}' is not in the local Hugging Face cache (*) "
            "and the hub cannot be reached (HF_HUB_OFFLINE=1 is set). Either:",
            f"  1. on a machine with internet, download it into a cache: `hf download {HUB_MODEL}`*"
            "point HF_HOME (or HF_HUB_CACHE) at it; or",
            f"  2. download it to a folder (`hf download {HUB_MODEL} --local-dir ./no-such-model`) "
            "and pass that folder's path as the model name.",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of *test_icl[[]downloaded-antonyms-accuracy]*",
            f"{folder} has no config.json, so it is not a saved transformers model. "
            "It holds model.Q4_K_M.gguf: pass that file's path instead.",
        ]
    )
    output = result.stdout.str()
    assert "Traceback" not in output and "site-packages" not in output
    assert "During handling of the above exception" not in output  # one message, no exception chain


def test_missing_model_path_is_a_usage_error(project, tmp_path):
    project.task()

    result = project.run(model=f"{tmp_path}/nowhere")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: no such file/folder: '{tmp_path}/nowhere' (resolved to {tmp_path}/nowhere)."])
