"""Constrained generation with a regex: the three samplers side by side.

    python examples/generate_regex.py

``Masking`` and ``AWRS`` draw each token from the same locally constrained distribution
``p * c / Z`` (AWRS checks only the tokens it reaches instead of the whole vocabulary);
``SMC`` reweights whole sequences towards the global ``p(x) c(x) / Z``.
"""

from __future__ import annotations

import re

import guided
from guided.models import load_default_model

PATTERN = r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
PROMPT = '{"event": "release", "date": "'


def main() -> None:
    model, tokenizer = load_default_model()
    date = guided.Regex(PATTERN)
    for sampler in (guided.Masking(), guided.AWRS(), guided.SMC(n_particles=8)):
        out = guided.generate(model, tokenizer, [PROMPT] * 3, date, sampler=sampler, seed=0,
                              max_new_tokens=16, return_details=True)
        s = out.stats
        print(f"{sampler!r}")
        for text, log_w in zip(out.texts, out.log_weights):
            assert re.fullmatch(PATTERN, text)
            print(f"    {text}   log weight {log_w:8.3f}")
        print(f"    {s.checks_per_token(len(tokenizer)):.1f} constraint checks per token "
              f"({s.masks} full masks), {1e3 * s.total_seconds / max(s.tokens, 1):.1f} ms per token")
    # Greedy (temperature 0) is the constrained argmax, whatever the sampler.
    print("greedy:", guided.generate(model, tokenizer, PROMPT, date, temperature=0))


if __name__ == "__main__":
    main()
