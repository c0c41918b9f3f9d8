"""Model and tokenizer identities (spec section 13) on the real default model and tiny models."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import torch
from avp_runtime import identity
from avp_runtime.connector import Connector
from transformers import LlamaConfig

CHILD = """
import sys
from avp_runtime import identity, models
lm = models.load_default()
mid, tid = identity.model_id(lm.model), identity.tokenizer_id(lm.tokenizer)
sys.stdout.write(mid.hex() + " " + tid.hex())
"""


def _llama_cfg(tied: bool = True) -> LlamaConfig:
    return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                       tie_word_embeddings=tied)


@pytest.mark.slow
def test_two_processes_compute_the_same_identities(smol: Connector) -> None:
    t0 = time.perf_counter()
    mine = identity.model_id(smol.model)
    elapsed = time.perf_counter() - t0
    print(f"\nmodel_id of SmolLM2-135M (float32, 538 MB of parameters): {elapsed:.2f} s")
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                           timeout=300, check=True)
    model_hex, tok_hex = child.stdout.split()
    assert model_hex == mine.hex()
    assert tok_hex == identity.tokenizer_id(smol.tokenizer).hex()


@pytest.mark.slow
def test_perturbed_weight_changes_the_model_id(smol: Connector) -> None:
    params = identity._unique_parameters(smol.model)
    base = identity.model_id_from_parts(identity.architecture(smol.model), params)
    assert base == smol.model_id
    # Nudge one element of one parameter by one ulp, on a copy: the shared model is untouched.
    name, t = params[len(params) // 2]
    bumped = t.detach().clone()
    flat = bumped.view(-1)
    flat[7] = torch.nextafter(flat[7], torch.tensor(float("inf"), dtype=flat.dtype))
    perturbed = [(n, bumped if n == name else p) for n, p in params]
    other = identity.model_id_from_parts(identity.architecture(smol.model), perturbed)
    assert other != base
    assert identity.model_id(smol.model) == base


def test_identity_ignores_device_path_and_name(tiny: Callable[..., Connector]) -> None:
    a, b = tiny(_llama_cfg()), tiny(_llama_cfg())
    b.model.config._name_or_path = "/somewhere/else"
    assert identity.model_id(a.model) == identity.model_id(b.model)


def test_tied_parameters_are_listed_once_under_the_smallest_name(
    tiny: Callable[..., Connector],
) -> None:
    tied = identity._unique_parameters(tiny(_llama_cfg(tied=True)).model)
    names = [n for n, _ in tied]
    # "lm_head.weight" < "model.embed_tokens.weight" bytewise, so the tie is listed as lm_head.
    assert "lm_head.weight" in names and "model.embed_tokens.weight" not in names
    assert names == sorted(names, key=str.encode)
    untied = [n for n, _ in identity._unique_parameters(tiny(_llama_cfg(tied=False)).model)]
    assert "lm_head.weight" in untied and "model.embed_tokens.weight" in untied
    assert tiny(_llama_cfg(tied=True)).model_id != tiny(_llama_cfg(tied=False)).model_id


def test_model_id_is_the_documented_byte_string(tiny: Callable[..., Connector]) -> None:
    """Recompute the digest from the spec text with plain struct packing, independently."""
    c = tiny(_llama_cfg())
    h = hashlib.sha256(b"AVP-MODEL-ID/1\n")
    h.update(identity.canonical_json(identity.architecture(c.model)).encode() + b"\n")
    smallest: dict[int, str] = {}
    objs = {}
    for n, p in c.model.named_parameters(remove_duplicate=False):
        if id(p) not in smallest or n.encode() < smallest[id(p)].encode():
            smallest[id(p)] = n
        objs[id(p)] = p
    named = {n: objs[i] for i, n in smallest.items()}
    assert len(named) < len(list(c.model.named_parameters(remove_duplicate=False)))
    for name in sorted(named, key=str.encode):
        p = named[name].detach().contiguous()
        data = p.numpy().tobytes()
        h.update(struct.pack("<I", len(name)) + name.encode())
        h.update(struct.pack("<BB", 1, p.dim()) + b"".join(struct.pack("<Q", d) for d in p.shape))
        h.update(struct.pack("<Q", len(data)) + data)
    assert h.digest() == identity.model_id(c.model)


def test_architecture_object_of_the_default_model(smol: Connector) -> None:
    arch = identity.architecture(smol.model)
    assert list(arch) == list(identity.ARCH_KEYS)
    assert arch["num_hidden_layers"] == 30 and arch["num_key_value_heads"] == 3
    assert arch["head_dim"] == 64 and arch["hidden_size"] == 576
    assert arch["rope_theta"] == 100000.0 and arch["rope_scaling"] is None
    text = identity.canonical_json(arch)
    assert '"rope_theta":100000,' in text and " " not in text
    assert json.loads(text) == arch


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (10000.0, "10000"),
        (9.999999747378752e-06, "0.000009999999747378752"),
        (1e-7, "1e-7"),
        (1.5e300, "1.5e+300"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (123456.789, "123456.789"),
        (1e21, "1e+21"),
        (2**53 + 0.0, "9007199254740992"),
        (True, "true"),
        (None, "null"),
        ("a\"b\\c\n\u00e9", '"a\\"b\\\\c\\u000a\u00e9"'),
        ({"b": [1, 2.0], "a": {}}, '{"a":{},"b":[1,2]}'),
    ],
)
def test_canonical_json(value: object, text: str) -> None:
    assert identity.canonical_json(value) == text


def test_canonical_json_rejects_non_finite() -> None:
    with pytest.raises(ValueError):
        identity.canonical_json(float("nan"))


def test_tokenizer_id_and_vocabulary(smol: Connector, gemma: Connector) -> None:
    vocab = identity.vocabulary(smol.tokenizer)
    assert len(vocab) == 49152
    blob = identity.vocabulary_bytes(smol.tokenizer)
    (first_len,) = struct.unpack_from("<I", blob, 0)
    assert blob[4:4 + first_len] == vocab[0]
    assert identity.vocab_digest(smol.tokenizer) == hashlib.sha256(blob).digest()
    # Recompute TOKENIZER_ID from the documented layout.
    specials = identity.special_ids(smol.tokenizer)
    raw = (b"AVP-TOKENIZER-ID/1\n" + struct.pack("<I", len(vocab)) + blob
           + struct.pack("<I", len(specials)) + b"".join(struct.pack("<I", i) for i in specials))
    assert hashlib.sha256(raw).digest() == smol.tokenizer_id
    assert smol.tokenizer_id != gemma.tokenizer_id
    assert smol.model_id != gemma.model_id
