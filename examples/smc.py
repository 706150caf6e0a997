"""Sequential Monte Carlo: samples from the *global* constrained distribution, and log Z.

    python examples/smc.py

Per-token samplers renormalise at every step, so they favour prefixes the model likes even
when those prefixes complete badly. ``guided.smc`` keeps weighted particles (AWRS
proposals, resampling when the effective sample size drops) whose weights correct that.
A critic (here: prefer short values) multiplies a potential into the target.
"""

from __future__ import annotations

import math

import guided
from guided.models import load_default_model

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 16}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def main() -> None:
    model, tokenizer = load_default_model()
    constraint = guided.JSONSchema(SCHEMA)
    result = guided.smc(model, tokenizer, "", constraint, n_particles=16, max_new_tokens=40, seed=0)
    print(f"log Z estimate: {result.log_z:.3f}   ESS: {result.ess:.1f} of {len(result.particles)}")
    for text, prob in list(result.posterior().items())[:5]:
        print(f"    {prob:6.3f}  {text}")

    def short(prefix: bytes) -> float:  # a twist scored on whole prefixes: -0.1 nats per byte
        return -0.1 * len(prefix)

    twisted = guided.smc(model, tokenizer, "", constraint, n_particles=16, max_new_tokens=40, seed=0, critic=short)
    mean_len = sum(p.weight * len(p.text) for p in twisted.particles)
    print(f"with the critic: mean length {mean_len:.1f} bytes, log Z {twisted.log_z:.3f}")
    assert all(p.weight == 0 or p.finished for p in twisted.particles)
    assert math.isfinite(result.log_z)


if __name__ == "__main__":
    main()
