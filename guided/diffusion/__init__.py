"""Constrained decoding for diffusion language models: infilling checks and a masked-diffusion sampler.

    >>> from guided.diffusion import InfillingChecker, Hole, generate
    >>> checker = InfillingChecker(load_grammar("json"), tokenizer)
    >>> checker.check([b'{"a": ', Hole(2), b'}'])                 # can two tokens complete it?
    True
    >>> generate(model, tokenizer, "JSON: ", load_grammar("json"), length=48, steps=48)

See :mod:`guided.diffusion.checker` for the semantics (exact token counts, greedy lexing over
all terminals) and :mod:`guided.diffusion.sampler` for the decoding loop.
"""

from guided.diffusion.canvas import Hole, canvas_parts, slots_of
from guided.diffusion.checker import CheckResult, InfillingChecker
from guided.diffusion.realize import parse_bytes
from guided.diffusion.sampler import DiffusionOutput, generate

__all__ = [
    "InfillingChecker",
    "CheckResult",
    "Hole",
    "generate",
    "DiffusionOutput",
    "canvas_parts",
    "slots_of",
    "parse_bytes",
]
