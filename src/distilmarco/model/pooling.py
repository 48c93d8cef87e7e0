"""Pooling token states into one vector per text: pure functions over tensors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

PoolingMode = Literal["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
POOLING_MODES: tuple[str, ...] = get_args(PoolingMode)


def pool(states: torch.Tensor, mask: torch.Tensor, modes: tuple[PoolingMode, ...]) -> torch.Tensor:
    """Pool (B, T, D) token states over the real tokens of (B, T) ``mask``.

    Several modes are concatenated in the order given, as sentence-transformers does. Sums run in
    float32 for half-precision ``states`` (float64 stays float64, for exact gradient checks); the
    result is (B, D * len(modes)).
    """
    import torch  # here, not at the top: the mode names are read without torch

    if states.dtype != torch.float64:
        states = states.float()
    m = mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
    return torch.cat([_pool_one(states, m, mode) for mode in modes], dim=-1)


def _pool_one(states: torch.Tensor, m: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    import torch

    if mode == "cls":
        return states[:, 0]  # right padding: the first token is always [CLS]
    if mode == "max":
        return states.masked_fill(m == 0, float("-inf")).max(dim=1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        total = (states * m).sum(dim=1)  # (B, D)
        count = m.sum(dim=1).clamp(min=1e-9)  # (B, 1)
        return total / (count if mode == "mean" else count.sqrt())
    if mode == "weightedmean":
        weights = torch.arange(1, states.shape[1] + 1, device=states.device, dtype=states.dtype)
        wm = m * weights.view(1, -1, 1)  # (B, T, 1): position-weighted mask
        return (states * wm).sum(dim=1) / wm.sum(dim=1).clamp(min=1e-9)
    # lasttoken: the last real token of each row (right padding)
    last = (m.squeeze(-1).sum(dim=1).long() - 1).clamp(min=0)  # (B,)
    return states[torch.arange(states.shape[0], device=states.device), last]
