"""Samplers: ``Masking`` (baseline), ``AWRS`` (adaptive weighted rejection sampling), ``SMC``.

Every sampler consumes only :class:`~guided.constraint.ConstraintState`.

    >>> guided.generate(model, tokenizer, prompt, constraint, sampler=AWRS())
    >>> guided.generate(model, tokenizer, prompt, constraint, sampler=SMC(n_particles=8))
"""

from guided.samplers.awrs import AWRS
from guided.samplers.base import DeadEndError, SamplerStats, Sampling, StepContext, StepResult, TokenSampler
from guided.samplers.masking import Masking
from guided.samplers.smc import SMC, Particle, SMCResult

__all__ = [
    "AWRS",
    "Masking",
    "SMC",
    "SMCResult",
    "Particle",
    "Sampling",
    "SamplerStats",
    "StepContext",
    "StepResult",
    "TokenSampler",
    "DeadEndError",
]
