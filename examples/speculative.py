"""Speculative drafting under a constraint: same output, fewer target passes.

    python examples/speculative.py

Generates JSON for a schema with the embedded default model, greedily, without drafting and
with each drafter (prompt lookup, Token Recycling, grammar-forced text, and an early-exit
draft model made of the target's first two layers), checks the outputs are identical and
counts the target's forward passes (timings: ``benchmarks/speculative.py``).
Then samples with drafting (the law is that of sampling without it) and runs SMC with
drafting (weighted particles of the global constrained distribution).
"""

from __future__ import annotations

import copy

import guided
from guided.generation import generate
from guided.json_schema import JSONSchema
from guided.speculative import generate_speculative, smc_speculative

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
    },
    "required": ["name", "port", "tags"],
    "additionalProperties": False,
}
PROMPT = '{"name": "web", "port": 8080, "tags": ["http", "public"]}\n{"name": "db", "port": 5432, "tags": ["'


def main() -> None:
    model, tokenizer = guided.load_default_model()
    constraint = JSONSchema(SCHEMA, whitespace="compact")
    draft_model = copy.deepcopy(model)  # a smaller LM with the same tokenizer: the first two layers
    draft_model.model.layers = draft_model.model.layers[:2]
    draft_model.config.num_hidden_layers = 2

    reference = generate(model, tokenizer, PROMPT, constraint, temperature=0, max_new_tokens=60, return_details=True)
    print(f"{'no drafting':<14} {len(reference.token_ids[0])} target passes  {reference.text}")
    for name, draft in [("prompt lookup", "prompt_lookup"), ("recycling", "recycling"), ("forced text", "forced"),
                        ("draft model", draft_model)]:
        out = generate_speculative(model, tokenizer, PROMPT, constraint, draft=draft, temperature=0, max_new_tokens=60,
                                   return_details=True)
        s = out.draft_stats
        print(f"{name:<14} {s.target_passes} target passes  same={out.text == reference.text}  "
              f"accepted {s.accepted}/{s.drafted} drafted tokens")

    texts = generate_speculative(model, tokenizer, [PROMPT] * 3, constraint, draft=draft_model, seed=0, max_new_tokens=60)
    print("sampled:", *texts, sep="\n  ")
    result = smc_speculative(model, tokenizer, PROMPT, constraint, n_particles=4, draft="prompt_lookup", seed=0,
                             max_new_tokens=60)
    print("SMC posterior:", {t[:40]: round(w, 3) for t, w in result.posterior().items()}, "log Z:", round(result.log_z, 2))


if __name__ == "__main__":
    main()
