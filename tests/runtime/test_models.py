"""Model loading: built-in names, the converted-model cache, pass-through paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from avp_runtime import models
from avp_runtime.connector import Connector
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig


def test_cache_root_honours_the_environment(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("AVP_MODEL_CACHE", str(tmp_path / "cache"))
    assert models.cache_root() == tmp_path / "cache"
    monkeypatch.delenv("AVP_MODEL_CACHE")
    assert models.cache_root() == Path.home() / ".cache" / "avp" / "models"


def test_aliases_resolve_to_the_builtin_cache_dirs(smol: Connector) -> None:
    # The `smol` fixture has populated the cache, so resolving converts nothing.
    name, path = models.resolve("default")
    assert name == models.DEFAULT_MODEL
    assert path == models.cache_root() / models.DEFAULT_MODEL
    assert (Path(path) / "config.json").exists()
    assert (Path(path) / "model.safetensors").exists()
    assert models.resolve("SmolLM2")[0] == models.DEFAULT_MODEL


def test_converted_cache_has_no_gguf_quantizer(smol: Connector) -> None:
    cfg = (models.cache_root() / models.DEFAULT_MODEL / "config.json").read_text()
    assert "quantization_config" not in cfg
    assert smol.model.config.num_hidden_layers == 30
    assert smol.model.config.num_key_value_heads == 3
    assert smol.model.config.hidden_size == 576
    assert not smol.model.training


def test_any_transformers_directory_loads(tmp_path: Path, smol: Connector) -> None:
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2,
                      vocab_size=smol.tokenizer.vocab_size)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(models.cache_root() / models.DEFAULT_MODEL).save_pretrained(
        tmp_path)
    lm = models.load_model(str(tmp_path))
    assert lm.name == str(tmp_path) and lm.model.config.num_hidden_layers == 2
    c = Connector(lm.model, lm.tokenizer, name=lm.name)
    assert c.tokenizer_id == smol.tokenizer_id and c.model_id != smol.model_id


def test_loading_reports_progress(capfd: pytest.CaptureFixture[str], smol: Connector) -> None:
    models.load_default()
    err = capfd.readouterr().err
    assert "loading smollm2-135m-instruct" in err and "loaded smollm2-135m-instruct" in err


def test_missing_model_package_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="not installed"):
        models._package_dir("no_such_model_package_avp")
