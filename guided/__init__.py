"""guided: constrained and guided decoding of language models.

    >>> import guided
    >>> model, tokenizer = guided.load_default_model()
    >>> guided.generate(model, tokenizer, "x = ", guided.Regex(r"[0-9]{1,4}"))

Names are imported lazily so ``import guided`` stays fast and works without optional parts.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Constraint": "guided.constraint",
    "ConstraintState": "guided.constraint",
    "ConstraintError": "guided.constraint",
    "Product": "guided.product",
    "Vocabulary": "guided.vocab",
    "load_tokenizer": "guided.tokenizers",
    "Regex": "guided.grammars",
    "Grammar": "guided.grammars",
    "JSONSchema": "guided.grammars.json_schema",
    "generate": "guided.generation",
    "smc": "guided.generation",
    "LogitsProcessor": "guided.logits_processor",
    "Masking": "guided.samplers",
    "AWRS": "guided.samplers",
    "SMC": "guided.samplers",
    "load_default_model": "guided.models",
    "load_grammar": "guided.grammars",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'guided' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
