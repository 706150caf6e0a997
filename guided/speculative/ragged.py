"""A causal LM over rows whose KV caches may hold holes: the target and draft side of drafting.

Speculative decoding feeds tokens that may be thrown away (rejected drafts, the branches of a
draft tree that were not taken), and different rows keep different numbers of them. Instead
of cropping each row's cache separately (impossible in one batched tensor), a rejected
column simply becomes a *hole*: it stays in the cache but no later query attends to it.
Every forward pass gets an explicit 4D attention mask (cache columns that are not holes, plus
the ancestors of each fed token inside the feed) and explicit position ids, so neither the
physical order of columns nor the holes change any logit. Trailing holes are cropped; when
holes pile up the cache is compacted (each row's live columns gathered to the right).

    >>> lm = RaggedLM(model, [prompt_a[:-1], prompt_b[:-1]])
    >>> logits = lm.feed([[a_last, d1, d2], [b_last, e1]])        # linear feeds, ragged
    >>> lm.truncate([len(prompt_a) + 1, len(prompt_b) + 2])        # keep a prefix of each
    >>> logits = lm.feed(tokens, parents=tree_parents)             # tree attention
    >>> lm.keep([[0, 2, 5], [0]])                                  # the accepted paths

Works with any Hugging Face causal LM whose forward accepts ``position_ids`` and a prepared
4D attention mask (Llama, Qwen, Mistral, Gemma, ... : every model built on
``transformers.masking_utils``), in float32, bfloat16 or float16, on CPU or CUDA.
"""

from __future__ import annotations

import inspect
import time
from typing import Sequence

import numpy as np
import torch

__all__ = ["RaggedLM", "DraftingUnsupportedError"]


class DraftingUnsupportedError(TypeError):
    """The model cannot be driven with explicit masks and position ids (needed for drafting)."""


class RaggedLM:
    """Rows of sequences in one batched KV cache, with per-row lengths and holes.

    Args:
        model: a Hugging Face causal LM.
        contexts: per row, the tokens to put in the cache now (may be empty).
        compact_ratio: compact the cache when holes exceed this fraction of its columns.
    """

    def __init__(self, model, contexts: Sequence[Sequence[int]], *, compact_ratio: float = 0.5):
        params = inspect.signature(model.forward).parameters
        if "position_ids" not in params:
            raise DraftingUnsupportedError(f"{type(model).__name__}.forward takes no position_ids")
        self.model = model
        self.device = _model_device(model)
        self.dtype = _model_dtype(model)
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
        self.compact_ratio = float(compact_ratio)
        self.forward_seconds = 0.0
        self.forward_calls = 0
        rows = len(contexts)
        self.lengths = [0] * rows  # tokens of each row in the cache (host copy: drives positions)
        # Position of the token in each cache column, -1 for a hole. Kept on the host: all the
        # bookkeeping is host-side, the device only sees the attention mask built from it.
        self.col_pos = np.zeros((rows, 0), dtype=np.int64)
        self.cache = _new_cache()
        self._tree: int | None = None  # first column of a tree feed not yet resolved by keep()
        if any(len(c) for c in contexts):
            self.feed(contexts, logits=False)

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def columns(self) -> int:
        return int(self.col_pos.shape[1])

    # -- feeding ---------------------------------------------------------------------------
    def feed(
        self,
        tokens: Sequence[Sequence[int]],
        parents: Sequence[Sequence[int]] | None = None,
        *,
        logits: bool = True,
    ) -> torch.Tensor | None:
        """Feed ``tokens[i]`` to row ``i``; return logits ``[rows, max_len, columns]`` after each.

        Without ``parents`` each row's tokens form a chain appended to the row (its length grows).
        With ``parents`` (``parents[i][j]``: index of token ``j``'s parent in the same feed, ``-1``
        for "the row so far"; parents come before children) the feed is a tree: token ``j``
        attends to the row and to its ancestors only, at position ``length + depth``. A tree
        feed must be resolved by :meth:`keep` before the next feed. Positions past a row's
        tokens are padding (garbage logits).
        """
        if self._tree is not None:
            raise RuntimeError("resolve the previous tree feed with keep() first")
        rows = self.rows
        if len(tokens) != rows:
            raise ValueError(f"expected {rows} rows of tokens, got {len(tokens)}")
        n = max((len(t) for t in tokens), default=0)
        if n == 0:
            return None
        ids = np.zeros((rows, n), dtype=np.int64)
        depth = np.zeros((rows, n), dtype=np.int64)
        live = np.zeros((rows, n), dtype=bool)
        anc = np.zeros((rows, n, n), dtype=bool)
        for i, row in enumerate(tokens):
            m = len(row)
            ids[i, :m] = row
            live[i, :m] = True
            par = parents[i] if parents is not None else None
            if par is not None and len(par) != m:
                raise ValueError(f"row {i}: {m} tokens but {len(par)} parents")
            for j in range(n):
                anc[i, j, j] = True
                if j >= m:
                    continue
                p = (j - 1) if par is None else int(par[j])
                if p >= 0:
                    if p >= j:
                        raise ValueError(f"row {i}: parent {p} of token {j} must come before it")
                    anc[i, j] |= anc[i, p]
                    depth[i, j] = depth[i, p] + 1
        dev = self.device
        positions = np.asarray(self.lengths, dtype=np.int64)[:, None] + depth
        cache_live = torch.from_numpy(self.col_pos >= 0).to(dev)
        live_t = torch.from_numpy(live).to(dev)
        allowed = torch.cat(
            [cache_live[:, None, :].expand(rows, n, self.columns) & live_t[:, :, None], torch.from_numpy(anc).to(dev)],
            dim=-1,
        )
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=dev)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        out = self._forward(
            torch.from_numpy(ids).to(dev), mask[:, None], torch.from_numpy(positions).to(dev), None if logits else 1
        )
        self.col_pos = np.concatenate([self.col_pos, np.where(live, positions, -1)], axis=1)
        if parents is None:
            self.lengths = [length + len(t) for length, t in zip(self.lengths, tokens)]
            self._trim()
        else:
            self._tree = self.columns - n
        return out if logits else None

    def keep(self, paths: Sequence[Sequence[int]]) -> None:
        """Resolve the last tree feed: row ``i`` keeps the fed tokens ``paths[i]`` (a root-to-node chain)."""
        if self._tree is None:
            raise RuntimeError("keep() follows a tree feed")
        start = self._tree
        self._tree = None
        kept = np.zeros((self.rows, self.columns - start), dtype=bool)
        for i, path in enumerate(paths):
            path = list(path)
            kept[i, path] = True
            self.lengths[i] += len(path)
        self.col_pos[:, start:] = np.where(kept, self.col_pos[:, start:], -1)
        self._trim()

    def truncate(self, lengths: Sequence[int]) -> None:
        """Row ``i`` keeps its first ``lengths[i]`` tokens (a rollback; never grows a row)."""
        if self._tree is not None:
            raise RuntimeError("resolve the previous tree feed with keep() first")
        new = [min(int(a), b) for a, b in zip(lengths, self.lengths)]
        if new == self.lengths:
            return
        limit = np.asarray(new, dtype=np.int64)
        self.col_pos = np.where(self.col_pos >= limit[:, None], -1, self.col_pos)
        self.lengths = new
        self._trim()

    def select(self, index: Sequence[int]) -> None:
        """Row ``i`` becomes old row ``index[i]`` (rows may repeat or be dropped)."""
        if self._tree is not None:
            raise RuntimeError("resolve the previous tree feed with keep() first")
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.device)
        for layer, keys, values in _layers(self.cache):
            _set_layer(self.cache, layer, keys.index_select(0, idx), values.index_select(0, idx))
        self.col_pos = self.col_pos[np.asarray(list(index), dtype=np.int64)]
        self.lengths = [self.lengths[int(i)] for i in index]
        self._trim()

    # -- cache housekeeping ----------------------------------------------------------------
    def _trim(self) -> None:
        """Crop columns that are holes in every row at the end; compact when holes dominate."""
        if self.columns == 0:
            return
        live = self.col_pos >= 0
        any_live = np.flatnonzero(live.any(axis=0))
        last = int(any_live[-1]) + 1 if len(any_live) else 0
        if last < self.columns:
            self._crop(last)
            live = live[:, :last]
        holes = int(live.size - live.sum())
        if self.columns > 32 and holes > self.compact_ratio * self.rows * self.columns:
            self._compact()

    def _crop(self, keep: int) -> None:
        for layer, keys, values in _layers(self.cache):
            _set_layer(self.cache, layer, keys[:, :, :keep], values[:, :, :keep])
        self.col_pos = self.col_pos[:, :keep]

    def _compact(self) -> None:
        """Move each row's holes to the left (order of live columns kept), drop all-hole columns."""
        live = (self.col_pos >= 0).astype(np.int8)
        order = np.argsort(live, axis=1, kind="stable")
        first = int((1 - live).sum(axis=1).min())
        order = order[:, first:]
        order_t = torch.from_numpy(np.ascontiguousarray(order)).to(self.device)
        for layer, keys, values in _layers(self.cache):
            _set_layer(self.cache, layer, _gather_columns(keys, order_t), _gather_columns(values, order_t))
        self.col_pos = np.take_along_axis(self.col_pos, order, axis=1)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, keep: int | None):
        kwargs = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "use_cache": True,
            self._cache_kw: self.cache,
        }
        if keep is not None and self._keep_kw is not None:
            kwargs[self._keep_kw] = keep
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model(**kwargs)
        if ids.device.type == "cuda":
            torch.cuda.synchronize(ids.device)
        self.forward_seconds += time.perf_counter() - t0
        self.forward_calls += 1
        returned = getattr(out, "cache", None)
        if returned is None:
            returned = getattr(out, "past_key_values", None)
        if returned is not None:
            self.cache = returned
        if _cache_columns(self.cache) != self.columns + ids.shape[1]:
            raise DraftingUnsupportedError(
                f"{type(self.model).__name__} did not append {ids.shape[1]} columns to its KV cache "
                "(sliding-window or recurrent caches cannot hold draft trees)"
            )
        return out.logits


# -- KV cache access across transformers versions ------------------------------------------
def _new_cache():
    from transformers import DynamicCache

    return DynamicCache()


def _layers(cache):
    """``(index, keys, values)`` of every initialised layer: transformers >= 4.56 and older."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for i, layer in enumerate(layers):
            if getattr(layer, "keys", None) is not None and layer.keys.dim() == 4:
                yield i, layer.keys, layer.values
        return
    for i, (k, v) in enumerate(zip(cache.key_cache, cache.value_cache)):  # pragma: no cover - old transformers
        if k is not None and k.dim() == 4:
            yield i, k, v


def _gather_columns(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``x[b, h, order[b, c], :]`` for a ``[batch, heads, columns, dim]`` tensor."""
    idx = order[:, None, :, None].expand(x.shape[0], x.shape[1], order.shape[1], x.shape[3])
    return x.gather(2, idx)


def _set_layer(cache, i: int, keys: torch.Tensor, values: torch.Tensor) -> None:
    layers = getattr(cache, "layers", None)
    if layers is not None:
        layers[i].keys, layers[i].values = keys, values
        return
    cache.key_cache[i], cache.value_cache[i] = keys, values  # pragma: no cover - old transformers


def _cache_columns(cache) -> int:
    for _, keys, _ in _layers(cache):
        return int(keys.shape[-2])
    return 0


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _model_dtype(model) -> torch.dtype:
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    return next(model.parameters()).dtype
