"""``SMC``: sequential Monte Carlo over whole sequences, with AWRS (or any weighted) proposals.

Per-token samplers draw from the *locally* renormalised distribution, which distorts the
global one (they walk into prefixes the model likes but that complete badly). SMC keeps
``n_particles`` partial sequences per prompt with log-weights: each step every live
particle takes one proposal step and adds its ``log Z_hat``; optional critic potentials
multiply in; when the effective sample size ``(sum w)^2 / sum w^2`` falls below
``ess_threshold * n_particles`` the particles are resampled (multinomial or systematic) and
the KV cache rows are reordered with them. The weighted particles approximate the global
constrained distribution ``p(x) c(x) / Z`` (times the critic on complete strings) and
``log_z`` estimates ``log Z`` (unbiased in ``Z``).

All particles (of all prompts) share one batched forward pass per step.

    >>> result = guided.smc(model, tokenizer, prompt, guided.Regex(r"[0-9]{2}"), n_particles=16)
    >>> result.posterior()          # {text: probability}
    >>> result.log_z                # estimate of log sum_x p(x) c(x)

Particles still unfinished after ``max_new_tokens`` get weight 0: the target is then the
distribution restricted to strings of at most ``max_new_tokens`` tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from guided.samplers.base import SamplerStats, StepContext, TokenSampler

__all__ = ["SMC", "SMCResult", "Particle", "systematic_resample", "multinomial_resample"]

Critic = Callable[[bytes], float]


@dataclass
class Particle:
    """One weighted sequence."""

    text: str
    token_ids: list[int]
    log_weight: float
    weight: float  # normalised over the particles of its prompt
    finished: bool


@dataclass
class SMCResult:
    """The weighted particles of one prompt and the estimate of ``log Z``."""

    particles: list[Particle]
    log_z: float
    stats: SamplerStats = field(default_factory=SamplerStats)

    def posterior(self) -> dict[str, float]:
        """Normalised weight of each distinct text (the estimate of the global distribution)."""
        out: dict[str, float] = {}
        for p in self.particles:
            if p.weight > 0:
                out[p.text] = out.get(p.text, 0.0) + p.weight
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    @property
    def ess(self) -> float:
        w = np.asarray([p.weight for p in self.particles])
        return float(1.0 / np.sum(w**2)) if w.sum() > 0 else 0.0

    def sample(self, rng: np.random.Generator | None = None) -> Particle:
        """One particle drawn in proportion to its weight (a properly weighted sample)."""
        rng = rng or np.random.default_rng()
        w = np.asarray([p.weight for p in self.particles], dtype=np.float64)
        if w.sum() <= 0:
            return self.particles[0]
        return self.particles[int(rng.choice(len(w), p=w / w.sum()))]


def _normalise(log_w: np.ndarray) -> np.ndarray:
    top = np.max(log_w)
    if not np.isfinite(top):
        return np.zeros_like(log_w)
    w = np.exp(log_w - top)
    return w / w.sum()


def multinomial_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``len(weights)`` i.i.d. ancestors drawn in proportion to ``weights`` (normalised)."""
    return rng.choice(len(weights), size=len(weights), p=weights)


def systematic_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ancestors from one uniform offset and evenly spaced points (lower variance)."""
    n = len(weights)
    points = (rng.random() + np.arange(n)) / n
    cdf = np.cumsum(weights)
    cdf[-1] = 1.0
    return np.minimum(np.searchsorted(cdf, points, side="right"), n - 1)


_RESAMPLERS = {"systematic": systematic_resample, "multinomial": multinomial_resample}


class SMC:
    """Sequential Monte Carlo with a weighted per-token proposal.

    Args:
        n_particles: particles per prompt.
        proposal: a weighted :class:`~guided.samplers.base.TokenSampler`; default ``AWRS()``.
        ess_threshold: resample when ESS < ``ess_threshold * n_particles`` (0: never, 1: always).
        resampling: ``"systematic"`` or ``"multinomial"``.
        critic: optional ``critic(output_bytes) -> log-potential`` scored on whole prefixes;
            each step multiplies in the ratio of the new and old potentials (a twist), so the
            final target is ``p(x) c(x) exp(critic(x))``. ``-inf`` kills a particle.
    """

    weighted = True

    def __init__(
        self,
        n_particles: int = 8,
        proposal: TokenSampler | None = None,
        ess_threshold: float = 0.5,
        resampling: str = "systematic",
        critic: Critic | None = None,
    ):
        if n_particles < 1:
            raise ValueError("n_particles must be >= 1")
        if resampling not in _RESAMPLERS:
            raise ValueError(f"resampling must be one of {sorted(_RESAMPLERS)}, not {resampling!r}")
        if not 0.0 <= ess_threshold <= 1.0:
            raise ValueError("ess_threshold must be in [0, 1]")
        if proposal is None:
            from guided.samplers.awrs import AWRS

            proposal = AWRS()
        if not proposal.weighted:
            raise ValueError(f"{proposal!r} gives no weights and cannot be an SMC proposal")
        self.n_particles = int(n_particles)
        self.proposal = proposal
        self.ess_threshold = float(ess_threshold)
        self.resampling = resampling
        self.critic = critic

    def __repr__(self) -> str:
        return f"SMC(n_particles={self.n_particles}, proposal={self.proposal!r}, resampling={self.resampling!r})"

    def run(self, lm, initial_states: Sequence, ctx: StepContext, max_new_tokens: int, pad_id: int) -> list[SMCResult]:
        """Run SMC on the prompts already in ``lm`` (one row each); one result per prompt."""
        if ctx.sampling.greedy:
            raise ValueError("SMC samples: use temperature > 0")
        t_start = time.perf_counter()
        ctx.truncation_fallback = False  # Z == 0 is information here: the particle dies
        vocab = ctx.vocab
        n = self.n_particles
        groups = lm.rows
        rows = groups * n
        lm.select([g for g in range(groups) for _ in range(n)])
        states = [initial_states[g] for g in range(groups) for _ in range(n)]
        tokens: list[list[int]] = [[] for _ in range(rows)]
        log_w = np.zeros(rows)
        finished = np.zeros(rows, dtype=bool)
        alive = np.ones(rows, dtype=bool)
        potential = np.zeros(rows)
        critic_cache: dict[bytes, float] = {}

        def score(prefix: bytes) -> float:
            value = critic_cache.get(prefix)
            if value is None:
                value = float(self.critic(prefix))
                critic_cache[prefix] = value
            return value

        if self.critic is not None:
            potential[:] = score(b"")
            log_w[:] = potential
            alive &= np.isfinite(potential)

        for t in range(max_new_tokens):
            active = np.flatnonzero(alive & ~finished)
            if len(active) == 0:
                break
            result = self.proposal.step(lm.logits[active], [states[i] for i in active], ctx)
            feed = [int(pad_id)] * rows
            for j, i in enumerate(active.tolist()):
                state = result.states[j]
                if state is None:
                    alive[i] = False
                    log_w[i] = -np.inf
                    continue
                token = result.tokens[j]
                tokens[i].append(token)
                states[i] = state
                log_w[i] += result.log_weights[j]
                feed[i] = token
                if state.is_finished():
                    finished[i] = True
                if self.critic is not None:
                    value = score(vocab.decode(tokens[i]))
                    log_w[i] += value - potential[i]
                    potential[i] = value
                    if not math.isfinite(value):
                        alive[i] = False
                        log_w[i] = -np.inf
            if not np.any(alive & ~finished) or t == max_new_tokens - 1:
                break
            index = self._resample(log_w, alive & ~finished, groups, ctx)
            if index is not None:
                ctx.stats.resamples += 1
                states = [states[i] for i in index]
                tokens = [list(tokens[i]) for i in index]
                feed = [feed[i] for i in index]
                finished, alive, potential = finished[index], alive[index], potential[index]
                lm.select(index.tolist())
            lm.append(feed)

        log_w = np.where(finished & alive, log_w, -np.inf)
        results = []
        for g in range(groups):
            sl = slice(g * n, (g + 1) * n)
            group_w = log_w[sl]
            top = np.max(group_w)
            log_z = float(top + np.log(np.mean(np.exp(group_w - top)))) if np.isfinite(top) else -math.inf
            norm = _normalise(group_w)
            particles = [
                Particle(
                    text=vocab.decode(tokens[i]).decode("utf-8", errors="replace"),
                    token_ids=list(tokens[i]),
                    log_weight=float(log_w[i]),
                    weight=float(norm[i - g * n]),
                    finished=bool(finished[i]),
                )
                for i in range(g * n, (g + 1) * n)
            ]
            results.append(SMCResult(particles, log_z, ctx.stats))
        ctx.stats.forward_seconds = getattr(lm, "forward_seconds", 0.0)
        ctx.stats.total_seconds += time.perf_counter() - t_start
        return results

    def _resample(self, log_w: np.ndarray, running: np.ndarray, groups: int, ctx: StepContext):
        """Ancestor index for every row, or ``None`` when no group needs resampling."""
        n = self.n_particles
        index = np.arange(len(log_w))
        changed = False
        for g in range(groups):
            sl = slice(g * n, (g + 1) * n)
            if not running[sl].any():
                continue
            w = _normalise(log_w[sl])
            if w.sum() == 0:
                continue
            ess = 1.0 / float(np.sum(w**2))
            if ess >= self.ess_threshold * n:
                continue
            ancestors = _RESAMPLERS[self.resampling](w, ctx.rng)
            group_w = log_w[sl]
            top = np.max(group_w)
            mean_log_w = top + np.log(np.mean(np.exp(group_w - top)))
            index[sl] = ancestors + g * n
            log_w[sl] = mean_log_w
            changed = True
        return index if changed else None
