"""The pytest session's own state: the model pool and the memo of analyses (tiny random models, no pytest run)."""

from __future__ import annotations

import pytest

from pytest_icl.errors import ModelError, TaskDefinitionError, TaskError
from pytest_icl.models.loading import resolve_model
from pytest_icl.options import IclOptions
from pytest_icl.pipeline import PipelineSettings
from pytest_icl.plugin import session as session_module
from pytest_icl.plugin.session import IclCase, IclSession
from pytest_icl.tasks.loading import TaskSource
from tests.tiny_models import save_tiny_model
from tests.unit.test_pipeline import _hermetic, inline_config  # noqa: F401 - the fixture applies here too


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("models")
    return [str(save_tiny_model(arch, folder / f"tiny-{arch}")) for arch in ("gpt2", "llama")]


def _session(models, **options) -> IclSession:
    return IclSession(IclOptions(models=tuple(models), device="cpu", limit=2, **options))


@pytest.fixture
def analyses(monkeypatch) -> list[tuple[str, str]]:
    """(model id, task name) of every analysis the session actually runs."""
    calls = []
    real = session_module.run_pipeline

    def counted(lm, source, settings, **kwargs):
        calls.append((lm.spec.id, source.name))
        return real(lm, source, settings, **kwargs)

    monkeypatch.setattr(session_module, "run_pipeline", counted)
    return calls


def test_the_settings_are_parsed_once_from_the_options(models):
    session = _session(models, shots=3, controls=("output",))
    assert session.settings == PipelineSettings(shots=3, limit=2, controls=("output",))
    assert [spec.id for spec in session.model_specs()] == ["tiny-gpt2", "tiny-llama"]


def test_a_pair_is_analysed_once_for_all_its_items(models, tmp_path, analyses):
    session = _session(models[:1])
    spec = resolve_model(models[0])
    source = TaskSource.inline(inline_config(tmp_path / "data"))
    first = session.result(IclCase(spec, source, "accuracy"))
    # Another item of the same pair, with the task read again: the same analysis.
    again = session.result(IclCase(spec, TaskSource.inline(inline_config(tmp_path / "data")), "simaou"))
    assert again is first and analyses == [("tiny-gpt2", "inline_antonyms")]


def test_two_inline_tasks_of_one_name_are_two_analyses(models, tmp_path, analyses):
    """The memo key is the task's content, not its name: other shots are another analysis."""
    session = _session(models[:1])
    spec = resolve_model(models[0])
    two = TaskSource.inline(inline_config(tmp_path / "a"))
    three = TaskSource.inline(inline_config(tmp_path / "a", shots=3))
    assert two.name == three.name
    assert session.memo_key(IclCase(spec, two)) != session.memo_key(IclCase(spec, three))
    results = [session.result(IclCase(spec, source)) for source in (two, three)]
    assert [r.row["shots"] for r in results] == [2, 3] and len(analyses) == 2
    assert session.pool.loads == ["tiny-gpt2"]  # the model is loaded once for both


def test_the_memo_key_follows_the_settings_that_change_an_analysis(models, tmp_path):
    spec = resolve_model(models[0])
    source = TaskSource.inline(inline_config(tmp_path / "a"))
    key = _session(models).memo_key(IclCase(spec, source))
    assert _session(models).memo_key(IclCase(spec, source, "kendall")) == key  # the property is not part of it
    assert _session(models, lr=0.5).memo_key(IclCase(spec, source)) != key
    assert _session(models, dtype="bfloat16").memo_key(IclCase(spec, source)) != key
    assert _session(models, data={"inline_antonyms": str(tmp_path)}).memo_key(IclCase(spec, source)) != key
    assert _session(models, data={"other_task": str(tmp_path)}).memo_key(IclCase(spec, source)) == key


def test_an_error_is_memoised_and_shown_once_then_pointed_to(models, tmp_path, analyses):
    """The first item of the pair gets the paragraph; the pair's other items a one-line pointer to it (same error class)."""
    session = _session(models[:1], shots=12)  # the few-shot split has 8 examples
    spec = resolve_model(models[0])
    source = TaskSource.inline(inline_config(tmp_path / "a"))
    with pytest.raises(TaskError, match="12 shots asked") as first:
        session.result(IclCase(spec, source, "accuracy"))
    with pytest.raises(TaskError) as second:
        session.result(IclCase(spec, source, "simaou"))
    assert type(second.value) is type(first.value) and len(analyses) == 1
    pointer = str(second.value)
    assert (
        pointer.startswith("tiny-gpt2-inline_antonyms: not analysed (")
        and "shown in full at test_icl[tiny-gpt2-inline_antonyms-accuracy]" in pointer
    )
    assert "\n" not in pointer and len(pointer) < 300  # one line: the head of the message, at most 120 characters
    with pytest.raises(TaskError) as again:  # the item that showed it asks again: the paragraph again
        session.result(IclCase(spec, source, "accuracy"))
    assert again.value is first.value


def test_a_model_that_cannot_load_is_shown_once_for_all_its_pairs(models, tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    session = _session([str(tmp_path / "broken")])
    spec = resolve_model(str(tmp_path / "broken"))
    one, two = (TaskSource.inline(inline_config(tmp_path / name, name)) for name in ("one", "two"))
    with pytest.raises(ModelError, match="cannot load the model") as first:
        session.result(IclCase(spec, one, "accuracy"))
    with pytest.raises(ModelError, match=r"^broken-two: not analysed \(ModelError\), shown in full at test_icl\[broken-one-accuracy\]: "):
        session.result(IclCase(spec, two, "accuracy"))
    assert "cannot load the model" in str(first.value)


def test_hub_data_a_collected_task_cannot_have_skips_with_the_whole_reason(models, tmp_path):
    """pytest already reports equal skip reasons once; a task the user named fails, and is pointed to."""
    from pytest_icl.errors import TaskUnavailable

    spec = resolve_model(models[0])
    source = TaskSource.inline(inline_config(tmp_path / "a"))
    for named, expected in (((), "offline, download it"), (("inline_antonyms",), "not analysed")):
        session = _session(models[:1], tasks=named)
        session._results[session.memo_key(IclCase(spec, source))] = TaskUnavailable("offline, download it")
        for prop in ("accuracy", "simaou"):
            with pytest.raises(TaskUnavailable) as error:
                session.result(IclCase(spec, source, prop))
        assert expected in str(error.value)


def test_two_files_with_one_task_name_are_refused_naming_both(models, tmp_path):
    session = _session(models[:1])
    session.claim_task("antonyms", tmp_path / "a.yaml")
    session.claim_task("antonyms", tmp_path / "a.yaml")  # the same file again is no conflict
    with pytest.raises(TaskDefinitionError, match=r"task 'antonyms' is defined by two files, .*a\.yaml and .*b\.yaml; .*Rename one"):
        session.claim_task("antonyms", tmp_path / "b.yaml")


@pytest.mark.parametrize(("name", "value", "message"), [
    ("PYTEST_ICL_CACHE", "FILE", "PYTEST_ICL_CACHE=*: it is a file, not a folder"),
    ("PYTEST_ICL_CACHE", "FILE/sub", "PYTEST_ICL_CACHE=*: * is a file, so no folder can be made in it"),
    ("HF_HUB_OFFLINE", "maybe", "HF_HUB_OFFLINE='maybe' is not a switch: set it to 1 (offline) or 0 (online)*"),
    ("HF_DATASETS_OFFLINE", "2", "HF_DATASETS_OFFLINE='2' is not a switch*"),
    ("HF_ENDPOINT", "huggingface.co", "HF_ENDPOINT='huggingface.co' is not a URL pytest-icl can connect to (expected http*"),
    ("HTTPS_PROXY", "http://proxy:port", "HTTPS_PROXY='http://proxy:port' is not a URL pytest-icl can connect to (Port could not*"),
])  # fmt: skip
def test_the_environment_is_checked_when_the_session_starts(models, tmp_path, monkeypatch, name, value, message):
    """Before any model loads: a usage error (exit 4 in a pytest run), one paragraph naming the variable."""
    import fnmatch

    from pytest_icl.errors import UsageError

    (tmp_path / "FILE").write_text("")
    monkeypatch.setenv(name, value.replace("FILE", str(tmp_path / "FILE")))
    with pytest.raises(UsageError) as error:
        _session(models[:1])
    assert fnmatch.fnmatch(str(error.value), message + "*") and "\n" not in str(error.value), str(error.value)


@pytest.mark.parametrize(("name", "value"), [
    ("HF_HUB_OFFLINE", "1"), ("HF_HUB_OFFLINE", "off"), ("HF_HUB_OFFLINE", ""), ("TRANSFORMERS_OFFLINE", "TRUE"),
    ("HTTPS_PROXY", "proxy.example:3128"), ("HF_ENDPOINT", "https://hf-mirror.example"), ("PYTEST_ICL_CACHE", "NEW/cache"),
])  # fmt: skip
def test_usable_environment_values_pass(models, tmp_path, monkeypatch, name, value):
    monkeypatch.setenv(name, value.replace("NEW", str(tmp_path / "new")))
    _session(models[:1])


def test_the_pool_holds_one_model_and_remembers_one_that_failed(models, tmp_path, monkeypatch):
    session = _session(models)
    gpt2, llama = (resolve_model(m) for m in models)
    first = session.pool.get(gpt2)
    assert session.pool.get(gpt2) is first
    session.pool.get(llama)
    assert first.model is None and session.pool.current.spec == llama  # the first was freed
    session.pool.get(gpt2)
    assert session.pool.loads == ["tiny-gpt2", "tiny-llama", "tiny-gpt2"]

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    broken = resolve_model(str(tmp_path / "broken"))
    with pytest.raises(ModelError) as error:
        session.pool.get(broken)
    loads = []
    monkeypatch.setattr("pytest_icl.models.loading.load_model", lambda *a, **k: loads.append(a))
    with pytest.raises(ModelError) as again:
        session.pool.get(broken)
    assert str(again.value) == str(error.value) and loads == []  # the same message, without a second attempt
    session.close()
    assert session.pool.current is None
