"""The language-model side of decoding: rows of sequences that advance one forward pass at a time.

:class:`LMBatch` is the step function every decoding loop drives (``generate``, SMC, and
speculative drafting): after construction it holds the next-token logits of every row;
``append`` feeds one token per row through one batched forward pass with the KV cache;
``select`` reorders or duplicates rows (SMC resampling); ``rollback`` drops the last
positions (speculative decoding); ``extend`` feeds several tokens per row at once
(verification of a draft).

    >>> batch = start_batch(model, [prompt_ids_a, prompt_ids_b], pad_id)
    >>> logits = batch.logits                   # [2, n_columns]
    >>> logits = batch.append([tok_a, tok_b])   # one forward pass, cache reused

Any Hugging Face causal LM works (:class:`HFBatch`); an object with a
``start_batch(prompt_ids, pad_id)`` method supplies its own batch (used by tests for fixed
next-token tables).
"""

from __future__ import annotations

import abc
import inspect
import time
from typing import Sequence

import torch

__all__ = ["LMBatch", "HFBatch", "start_batch"]


class LMBatch(abc.ABC):
    """Rows of token sequences decoded together; ``logits`` is ``[rows, n_columns]``."""

    logits: torch.Tensor
    forward_seconds: float = 0.0

    @property
    def rows(self) -> int:
        return int(self.logits.shape[0])

    @property
    def device(self) -> torch.device:
        return self.logits.device

    @abc.abstractmethod
    def append(self, tokens: Sequence[int]) -> torch.Tensor:
        """Feed one token per row; return (and keep in ``logits``) the next-token logits."""

    @abc.abstractmethod
    def select(self, index: Sequence[int]) -> None:
        """Row ``i`` becomes old row ``index[i]`` (rows may repeat or be dropped)."""

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` (``[rows, n]``); return logits ``[rows, n, n_columns]`` after each."""
        outs = [self.append(tokens[:, j].tolist()) for j in range(tokens.shape[1])]
        return torch.stack(outs, dim=1)

    def rollback(self, n: int) -> None:  # pragma: no cover - implemented where supported
        """Drop the last ``n`` positions of every row (``logits`` become stale until the next append)."""
        raise NotImplementedError(f"{type(self).__name__} cannot roll back")


def start_batch(model, prompt_ids: Sequence[Sequence[int]], pad_id: int) -> LMBatch:
    """The batch for ``model``: its own ``start_batch`` if it has one, else :class:`HFBatch`."""
    own = getattr(model, "start_batch", None)
    if callable(own):
        return own(prompt_ids, pad_id)
    return HFBatch(model, prompt_ids, pad_id)


class HFBatch(LMBatch):
    """A Hugging Face causal LM with left-padded prompts and the model's own KV cache.

    Prompts are left-padded; the attention mask and explicit position ids keep padded rows
    exact. Forward time is measured (with a device synchronisation on CUDA, which costs
    nothing here because the sampler reads the logits right after).
    """

    def __init__(self, model, prompt_ids: Sequence[Sequence[int]], pad_id: int):
        if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
            raise ValueError("every prompt must have at least one token (add a BOS token to empty prompts)")
        self.model = model
        self.forward_seconds = 0.0
        params = inspect.signature(model.forward).parameters
        self._pass_positions = "position_ids" in params
        self._keep_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
        # transformers 5 renamed `past_key_values` to `cache` (the old name still works, with a warning).
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        device = _model_device(model)
        width = max(len(p) for p in prompt_ids)
        ids = torch.full((len(prompt_ids), width), int(pad_id), dtype=torch.long)
        mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        for i, p in enumerate(prompt_ids):
            ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
        self.attention_mask = mask.to(device)
        positions = (self.attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.next_position = positions[:, -1] + 1
        self.cache = None
        self.logits = self._forward(ids.to(device), positions)[:, -1, :]

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, keep: int | None = 1) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": self.attention_mask, "use_cache": True}
        if self.cache is not None:
            kwargs[self._cache_kw] = self.cache
        if self._pass_positions:
            kwargs["position_ids"] = positions
        if self._keep_kw is not None and keep is not None:
            kwargs[self._keep_kw] = keep
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model(**kwargs)
        if input_ids.device.type == "cuda":
            torch.cuda.synchronize(input_ids.device)
        self.forward_seconds += time.perf_counter() - t0
        cache = getattr(out, "cache", None)
        self.cache = cache if cache is not None else getattr(out, "past_key_values", None)
        return out.logits

    def append(self, tokens: Sequence[int]) -> torch.Tensor:
        return self.extend(torch.as_tensor(list(tokens), dtype=torch.long).view(-1, 1))[:, -1, :]

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.attention_mask.device, dtype=torch.long)
        rows, n = tokens.shape
        ones = torch.ones((rows, n), dtype=self.attention_mask.dtype, device=self.attention_mask.device)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=-1)
        positions = self.next_position[:, None] + torch.arange(n, device=tokens.device)[None, :]
        self.next_position = self.next_position + n
        logits = self._forward(tokens, positions, keep=None if n > 1 else 1)
        logits = logits[:, -n:, :]
        self.logits = logits[:, -1, :]
        return logits

    def select(self, index: Sequence[int]) -> None:
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.attention_mask.device)
        if self.cache is not None:
            self.cache.reorder_cache(idx)
        self.attention_mask = self.attention_mask.index_select(0, idx)
        self.next_position = self.next_position.index_select(0, idx)
        self.logits = self.logits.index_select(0, idx)

    def rollback(self, n: int) -> None:
        if n <= 0:
            return
        # A negative argument means "remove n positions" in every transformers version.
        self.cache.crop(-n)
        self.attention_mask = self.attention_mask[:, :-n]
        self.next_position = self.next_position - n


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device
