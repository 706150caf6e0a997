"""guided: constrained and guided decoding of language models.

    >>> import guided
    >>> model, tokenizer = guided.load_default_model()
    >>> guided.generate(model, tokenizer, "x = ", guided.Regex(r"[0-9]{1,4}"))

Names are imported lazily so ``import guided`` stays fast and works without optional parts.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

from guided import _moved

_moved.install()  # old module paths (guided.server, guided.grammars.json_schema, ...) still import

_EXPORTS = {
    "Constraint": "guided.constraint",
    "ConstraintState": "guided.constraint",
    "ConstraintError": "guided.constraint",
    "Product": "guided.constraint",
    "Vocabulary": "guided.vocab",
    "load_tokenizer": "guided.tokenizers",
    "Regex": "guided.grammars",
    "Grammar": "guided.grammars",
    "GrammarWarning": "guided.grammars",
    "StructuralTag": "guided.grammars",
    "Tag": "guided.grammars",
    "JSONSchema": "guided.json_schema",
    "generate": "guided.generation",
    "smc": "guided.generation",
    "LogitsProcessor": "guided.integrations.huggingface",
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
