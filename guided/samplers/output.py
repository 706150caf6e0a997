"""What a generation run returns, shared by ``generate`` and speculative generation.

    >>> out = GenerationOutput(texts, token_ids, log_weights, finished)
    >>> shape_result(out, single=True, return_weights=False, return_details=False)   # a str
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from guided.samplers.base import SamplerStats, StepContext
from guided.samplers.smc import SMCResult

__all__ = ["GenerationOutput", "shape_result", "output_from_smc"]


@dataclass
class GenerationOutput:
    """Everything ``generate(..., return_details=True)`` knows about a batch."""

    texts: list[str]
    token_ids: list[list[int]]  # generated ids, EOS included when it was emitted
    log_weights: np.ndarray  # per row: sum of the steps' log Z estimates (SMC: log Z_hat)
    finished: list[bool]  # the row emitted EOS (its text is a complete word of the constraint)
    stats: SamplerStats = field(default_factory=SamplerStats)

    @property
    def text(self) -> str:
        return self.texts[0]


def shape_result(out: GenerationOutput, single: bool, return_weights: bool, return_details: bool):
    """What ``generate`` returns: the details, ``(text(s), log weight(s))`` or the text(s)."""
    if return_details:
        return out
    if return_weights:
        if single:
            return out.texts[0], float(out.log_weights[0])
        return out.texts, out.log_weights
    return out.texts[0] if single else out.texts


def output_from_smc(results: list[SMCResult], ctx: StepContext, cls: type = GenerationOutput, **extra):
    """One particle per prompt, drawn by weight, with ``log Z_hat`` as its weight."""
    chosen = [r.sample(ctx.rng) for r in results]
    return cls(
        texts=[p.text for p in chosen],
        token_ids=[p.token_ids for p in chosen],
        log_weights=np.asarray([r.log_z for r in results]),
        finished=[p.finished for p in chosen],
        stats=ctx.stats,
        **extra,
    )
