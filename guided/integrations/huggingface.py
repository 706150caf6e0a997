"""``LogitsProcessor``: a constraint for users who stay with Hugging Face's ``model.generate``.

    >>> from guided import LogitsProcessor, Regex
    >>> processor = LogitsProcessor(Regex(r"[0-9]{3}"), tokenizer)
    >>> out = model.generate(**tokenizer(["x = ", "y = "], return_tensors="pt", padding=True),
    ...                      logits_processor=[processor], max_new_tokens=8)

Works with greedy search, sampling and beam search, and with batches: each row's constraint
state is found from its tokens (keyed by the row's whole token sequence), so the row
reordering of beam search needs no bookkeeping. States are immutable, so a state shared by
several beams is computed once.

Order under ``model.generate``: Hugging Face runs custom processors *before* its
temperature / top-k / top-p warpers, so there the constraint masks first and top-k/top-p
then act on the constrained distribution (``guided.generate`` applies them before the
constraint). Tokens the constraint forbids get ``-inf``; columns beyond the tokenizer's
vocabulary (embedding padding) are always forbidden. A row whose constraint is finished
(EOS emitted) is left unchanged (Hugging Face pads it).

A new ``generate`` call is detected when the sequence length does not grow by one, or a
row's prefix is unknown; call :meth:`reset` to force it.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

from guided.constraint import Constraint, ConstraintState
from guided.vocab import Vocabulary

__all__ = ["LogitsProcessor"]


class LogitsProcessor(transformers.LogitsProcessor):
    """Masks every token that ``constraint`` does not allow next, row by row."""

    def __init__(self, constraint: Constraint, tokenizer):
        self.constraint = constraint
        self.vocab = Vocabulary.from_tokenizer(tokenizer)
        self._start: ConstraintState | None = None
        self._states: dict[tuple[int, ...], ConstraintState | None] = {}
        self._length: int | None = None

    def reset(self) -> None:
        """Forget the rows of the previous generation."""
        self._states = {}
        self._length = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = [tuple(r) for r in input_ids.tolist()]
        states = None
        if self._length is not None and input_ids.shape[1] == self._length + 1:
            states = self._continue(rows)
        if states is None:  # the first call of a generation: every row is a prompt
            if self._start is None:
                self._start = self.constraint.start(self.vocab)
            states = {row: self._start for row in rows}
        self._states = states
        self._length = input_ids.shape[1]
        return self._apply(rows, scores)

    def _continue(self, rows: list[tuple[int, ...]]) -> dict | None:
        states: dict[tuple[int, ...], ConstraintState | None] = {}
        for row in rows:
            if row in states:
                continue
            parent_key = row[:-1]
            if parent_key not in self._states:
                return None
            parent = self._states[parent_key]
            states[row] = None if parent is None else parent.advance(row[-1])
        return states

    def _apply(self, rows: list[tuple[int, ...]], scores: torch.FloatTensor) -> torch.FloatTensor:
        width = scores.shape[-1]
        size = min(width, self.vocab.size)
        allowed = torch.zeros(scores.shape, dtype=torch.bool)
        masks: dict[int, torch.Tensor] = {}
        for i, row in enumerate(rows):
            state = self._states[row]
            if state is None or state.is_finished():
                allowed[i] = True
                continue
            key = id(state)
            if key not in masks:
                masks[key] = torch.from_numpy(np.array(state.allowed_mask()[:size]))  # may be read-only
            allowed[i, :size] = masks[key]
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))
