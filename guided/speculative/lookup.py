"""Prompt-lookup / n-gram drafting: copy what followed the last occurrence of the current suffix.

JSON and code repeat themselves (keys, identifiers, whole lines), and so do prompts that
contain examples. The drafter looks for the longest suffix of the text so far (``max_ngram``
tokens down to ``min_ngram``) that occurred earlier in the prompt or the generated text, and
proposes the tokens that followed its most recent earlier occurrence. No model call.

    >>> guided.speculative.generate_speculative(model, tok, prompt, schema, draft="prompt_lookup")
    >>> PromptLookupDrafter(max_ngram=3, num_tokens=8)

Stateless between rounds (the search is a vectorised scan of the row's ids), so rows can be
reordered freely.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from guided.speculative.drafts import Draft, Drafter, RowContext

__all__ = ["PromptLookupDrafter", "lookup_continuation"]


def lookup_continuation(ids: Sequence[int], max_ngram: int = 3, min_ngram: int = 1, num_tokens: int = 8) -> list[int]:
    """Tokens that followed the most recent earlier occurrence of the longest matching suffix.

    >>> lookup_continuation([1, 2, 3, 9, 1, 2], max_ngram=2)
    [3, 9, 1, 2]
    """
    seq = np.asarray(ids, dtype=np.int64)
    n_total = len(seq)
    if num_tokens <= 0:
        return []
    for n in range(min(max_ngram, n_total - 1), min_ngram - 1, -1):
        suffix = seq[n_total - n :]
        # Candidate end positions e (exclusive) of earlier occurrences: e <= n_total - 1.
        hits = np.ones(n_total - n, dtype=bool)
        for j in range(n):
            hits &= seq[j : n_total - n + j] == suffix[j]
        starts = np.flatnonzero(hits)
        if len(starts):
            end = int(starts[-1]) + n
            return seq[end : end + num_tokens].tolist()
    return []


class PromptLookupDrafter(Drafter):
    """n-gram lookup in the prompt and the text so far (Hugging Face's ``prompt_lookup_num_tokens``).

    Args:
        max_ngram / min_ngram: suffix lengths tried, longest first.
        num_tokens: tokens proposed at most per round.
    """

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1, num_tokens: int = 8):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError("need 1 <= min_ngram <= max_ngram")
        self.max_ngram = int(max_ngram)
        self.min_ngram = int(min_ngram)
        self.num_tokens = int(num_tokens)

    def __repr__(self) -> str:
        return f"PromptLookupDrafter(max_ngram={self.max_ngram}, num_tokens={self.num_tokens})"

    def propose(self, rows: Sequence[RowContext]) -> list[Draft]:
        out = []
        for row in rows:
            k = min(self.num_tokens, row.budget)
            tokens = lookup_continuation(row.history(), self.max_ngram, self.min_ngram, k) if k > 0 else []
            out.append(Draft.chain(tokens))
        return out
