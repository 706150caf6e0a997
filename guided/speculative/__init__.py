"""Speculative drafting that composes with every constraint and sampler.

A cheap drafter proposes tokens, the target scores them all in one forward pass, and the
longest prefix agreeing with the *constrained* target is kept, so the output has exactly the
law of constrained decoding without drafting (token for token under greedy decoding).

    >>> from guided.speculative import generate_speculative
    >>> generate_speculative(model, tok, prompt, guided.JSONSchema(schema), draft=draft_model, temperature=0)
    >>> generate_speculative(model, tok, prompt, constraint, draft="prompt_lookup")
    >>> generate_speculative(model, tok, prompt, constraint, draft="recycling", sampler=guided.SMC(8))

Drafters: a smaller causal LM sharing the tokenizer (:class:`ModelDrafter`), n-gram prompt
lookup (:class:`PromptLookupDrafter`), Token Recycling trees (:class:`TokenRecyclingDrafter`)
and grammar-forced text (:class:`ForcedDrafter`, also put in front of every other drafter).
Files: ``ragged.py`` (KV caches with holes and tree attention), ``verify.py`` (the acceptance
rules), ``rounds.py`` (one draft-verify round), ``generate.py`` (the entry points).
"""

from guided.speculative.drafts import Draft, Drafter, DraftSession, RowContext, cut_to_constraint
from guided.speculative.forced import ForcedDrafter, forced_bytes, retokenise
from guided.speculative.generate import SpeculativeOutput, generate_speculative, make_drafter, smc_speculative
from guided.speculative.lookup import PromptLookupDrafter, lookup_continuation
from guided.speculative.model_drafter import ModelDrafter
from guided.speculative.ragged import DraftingUnsupportedError, RaggedLM
from guided.speculative.recycling import TokenRecyclingDrafter, tree_template
from guided.speculative.rounds import DraftStats

__all__ = [
    "generate_speculative",
    "smc_speculative",
    "make_drafter",
    "SpeculativeOutput",
    "DraftStats",
    "Draft",
    "Drafter",
    "DraftSession",
    "RowContext",
    "cut_to_constraint",
    "ModelDrafter",
    "PromptLookupDrafter",
    "TokenRecyclingDrafter",
    "ForcedDrafter",
    "forced_bytes",
    "retokenise",
    "lookup_continuation",
    "tree_template",
    "RaggedLM",
    "DraftingUnsupportedError",
]
