"""Shared fixtures for the runtime tests.

Each real model is loaded once per test worker (session scope) and shared by every test that
needs it; tests must not mutate these models (perturbation tests work on copies or on the
identity function's inputs). The first run on a machine converts the GGUF files into the model
cache (~1 minute per model); later runs load in about a second.

Tiny randomly initialised models (2 layers, hidden 64) cover cache layer kinds that the real
models do not have; they build in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from avp_runtime.connector import Connector

# pytest runs with -n 2 on 2 cores: one intra-op thread per worker avoids oversubscription,
# which on a busy machine slows a 135M-parameter forward pass by 4-6x (measured).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smol() -> Connector:
    """SmolLM2-135M-Instruct, the default model (agent A in the two-agent tests)."""
    return Connector.default()


@pytest.fixture(scope="session")
def smol_b() -> Connector:
    """A second, separately loaded copy of the default model (agent B)."""
    return Connector.default()


@pytest.fixture(scope="session")
def gemma() -> Connector:
    """Gemma-3-270M base: 15 sliding-window layers (window 512) and 3 full-attention layers."""
    return Connector.from_pretrained("gemma-3-270m")


def build_tiny(config: Any, seed: int = 0) -> Connector:
    """A randomly initialised causal LM of `config`, without a tokenizer."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return Connector(model.eval(), None, name=f"tiny-{config.model_type}")


@pytest.fixture()
def tiny() -> Callable[..., Connector]:
    return build_tiny
