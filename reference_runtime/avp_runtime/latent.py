"""LatentMAS realignment: map a last-layer hidden state back into input-embedding space.

A latent step feeds the model its own last hidden state as the next input. Hidden states live in
the output space (they are read by W_out, the LM head), inputs in the input-embedding space (W_in),
so the state is first mapped by the ridge-regression solution of W_out W_a ~= W_in:

    W_a = (W_out^T W_out + lambda I)^-1 W_out^T W_in          ([hidden, hidden])

then rescaled to the mean norm of the input embeddings, so the fed-back vector has the magnitude
the first layer expects. With tied embeddings W_out == W_in and W_a is close to the identity; the
same formula covers both cases. The matrix is computed once per model, in torch, on the model's
own device (float32 for the solve; the result is cast to the model's dtype).

Models that scale their input embeddings inside the embedding module (Gemma multiplies by
sqrt(hidden)) are handled by folding that scale into W_in: what the model expects as
`inputs_embeds` is the scaled embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

DEFAULT_LAMBDA = 1e-5


def _embed_scale(embedding: Any) -> float:
    scale = getattr(embedding, "embed_scale", None)
    if scale is None:
        return 1.0
    return float(scale.item()) if isinstance(scale, torch.Tensor) else float(scale)


@dataclass
class Realigner:
    """h -> (h W_a) * target_norm / ||h W_a||, for h of shape [..., hidden]."""

    matrix: torch.Tensor  # [hidden, hidden], model dtype, model device
    target_norm: float
    tied: bool

    @classmethod
    def for_model(cls, model: Any, lam: float = DEFAULT_LAMBDA) -> Realigner:
        w_in_mod = model.get_input_embeddings()
        w_out_mod = model.get_output_embeddings()
        w_in = w_in_mod.weight.detach()
        tied = w_out_mod is None or w_out_mod.weight is w_in_mod.weight
        w_out = w_in if w_out_mod is None else w_out_mod.weight.detach()
        scale = _embed_scale(w_in_mod)
        with torch.inference_mode():
            # .float() is free for float32 weights; the embedding scale is applied to the small
            # [hidden, hidden] products rather than to the [vocab, hidden] table.
            w_in32, w_out32 = w_in.float(), w_out.float()
            d = w_out32.shape[1]
            gram = w_out32.T @ w_out32
            # Tied: W_out^T W_in is the Gram matrix itself; reusing it halves the cost, which
            # matters for 262k-token vocabularies.
            rhs = (gram.clone() if tied else w_out32.T @ w_in32) * scale
            gram += lam * torch.eye(d, device=gram.device, dtype=gram.dtype)
            matrix = torch.linalg.solve(gram, rhs)
            target = float(w_in32.norm(dim=1).mean()) * scale
        return cls(matrix.to(w_in.dtype), target, tied)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = h.to(self.matrix.dtype) @ self.matrix
            norm = x.float().norm(dim=-1, keepdim=True).clamp_min(1e-6)
            out: torch.Tensor = (x.float() * (self.target_norm / norm)).to(self.matrix.dtype)
            return out
