"""What every token sampler shares: the step protocol, logit processing, statistics.

A sampler step takes a batch of next-token logits rows and the matching constraint states
and returns, for each row, the chosen token, the advanced state and a log-weight increment:
the log of an (unbiased) estimate of the valid mass ``Z = sum_t p(t) c(t)``.

    >>> ctx = StepContext.create(vocab, Sampling(temperature=0.8), seed=0)
    >>> result = AWRS().step(logits, [state, state], ctx)   # logits: [2, n_columns]
    >>> result.tokens, result.states, result.log_weights

Order of processing (the same in every sampler, in ``generate`` and in ``smc``):

1. ``logits``: the model's scores for the next token. Columns ``>= vocab.size`` (embedding
   padding) are never allowed.
2. ``/ temperature``. ``temperature == 0`` means greedy: the constrained argmax (top-k and
   top-p are then ignored; weights are 0).
3. top-k, then top-p (nucleus), on the *unconstrained* distribution, as Hugging Face does.
4. log-softmax: the proposal distribution ``p``.
5. the constraint: a full mask (:class:`~guided.samplers.Masking`) or the rejection walk
   (:class:`~guided.samplers.AWRS`); the token is an exact draw from ``p * c / Z``.

If step 3 leaves no valid token with mass (``Z == 0``), ``generate`` falls back to the
distribution of step 2 (counted in ``stats.truncation_fallbacks``); SMC instead lets the
particle die (its weight is an exact 0).
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from guided.constraint import ConstraintState
    from guided.vocab import Vocabulary

__all__ = [
    "Sampling",
    "SamplerStats",
    "StepContext",
    "StepResult",
    "TokenSampler",
    "DeadEndError",
    "next_token_logprobs",
    "untruncated_logprobs",
    "masked_draw",
    "inverse_cdf_draws",
    "bitmask_to_bool",
]


class DeadEndError(RuntimeError):
    """A constraint state allows no token at all (the constraint cannot be completed)."""


@dataclass(frozen=True)
class Sampling:
    """How logits become the proposal distribution ``p`` (see the module docstring for the order)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class SamplerStats:
    """Counters of one generation (all rows together)."""

    tokens: int = 0  # tokens produced (one per row per step)
    checks: int = 0  # single-token constraint checks (advance / allows)
    lookups: int = 0  # checks answered by a mask the state already held (no constraint work)
    masks: int = 0  # full allowed_mask() computations
    mask_fallbacks: int = 0  # AWRS steps that hit max_rejects and used a full mask instead
    truncation_fallbacks: int = 0  # steps where top-k/top-p cut every valid token
    dead: int = 0  # rows left with no valid token (weight 0)
    resamples: int = 0  # SMC resampling events
    masks_prefetched: int = 0  # masks computed while the forward pass ran (decode's overlap)
    constraint_seconds: float = 0.0  # time inside constraint calls
    sampler_seconds: float = 0.0  # time inside sampler steps (includes constraint_seconds)
    forward_seconds: float = 0.0  # time inside the model's forward passes
    total_seconds: float = 0.0  # wall time of the whole generation

    def merge(self, other: "SamplerStats") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def checks_per_token(self, vocab_size: int) -> float:
        """Single checks plus ``vocab_size`` per full mask, per generated token."""
        return (self.checks + self.masks * vocab_size) / max(self.tokens, 1)


@dataclass
class StepContext:
    """Everything a sampler step needs besides the logits and the states."""

    vocab: "Vocabulary"
    sampling: Sampling
    generator: torch.Generator  # device-side randomness (Gumbel noise, multinomial draws)
    rng: np.random.Generator  # host-side randomness (geometric draws, resampling)
    stats: SamplerStats = field(default_factory=SamplerStats)
    truncation_fallback: bool = True  # generate: True; SMC: False (Z == 0 kills the particle)
    # made from a seed: the caller wants the same draws again (AWRS then walks even where a
    # mask is known, since which masks are cached depends on what ran before)
    seeded: bool = False
    # cache_key -> {token: next state or None}: transitions already computed in this generation
    transitions: dict = field(default_factory=dict)
    # (states, future of their packed bitmask) started by prefetch_masks, taken by masks()
    _prefetched: tuple | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        vocab: "Vocabulary",
        sampling: Sampling | None = None,
        seed: int | None = None,
        device: torch.device | str = "cpu",
        truncation_fallback: bool = True,
    ) -> "StepContext":
        """A context with generators seeded from ``seed`` (fresh entropy when ``None``)."""
        seeded = seed is not None
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        generator = torch.Generator(device=torch.device(device))
        generator.manual_seed(int(seed))
        return cls(
            vocab=vocab,
            sampling=sampling or Sampling(),
            generator=generator,
            rng=np.random.default_rng(seed),
            truncation_fallback=truncation_fallback,
            seeded=seeded,
        )

    # -- constraint calls, counted and timed ------------------------------------------
    def advance(self, state: "ConstraintState", token: int) -> "ConstraintState | None":
        t0 = time.perf_counter()
        nxt = state.advance(token)
        self.stats.constraint_seconds += time.perf_counter() - t0
        self.stats.checks += 1
        return nxt

    def allows(self, state: "ConstraintState", token: int) -> bool:
        t0 = time.perf_counter()
        ok = state.allows(token)
        self.stats.constraint_seconds += time.perf_counter() - t0
        self.stats.checks += 1
        return ok

    def masks(self, states: Sequence["ConstraintState"], width: int, device: torch.device) -> torch.Tensor:
        """Allowed masks of ``states`` as a bool tensor ``[len(states), width]`` on ``device``.

        Filled as one packed bitmask (rows in parallel threads, see
        :func:`guided.bitmask.fill_bitmasks`), or taken from :meth:`prefetch_masks` when it
        was started for these states (or a prefix of them: rows that joined since are added).
        """
        t0 = time.perf_counter()
        states = list(states)
        bits, reused = self._take_prefetched(states)
        self.stats.masks_prefetched += reused
        mask = bitmask_to_bool(bits, self.vocab.size, width, device)
        self.stats.constraint_seconds += time.perf_counter() - t0
        self.stats.masks += len(states)
        return mask

    def prefetch_masks(self, states: Sequence["ConstraintState"]) -> None:
        """Start computing the masks of ``states`` on a worker thread, so that they are made
        while the model's next forward pass runs; the next :meth:`masks` call for the same
        states (same objects, same order, perhaps with more after them) takes them."""
        states = list(states)
        self._prefetched = (states, _prefetch_pool().submit(self._fill, states))

    def _take_prefetched(self, states: list) -> tuple[np.ndarray, int]:
        """The masks of ``states`` and how many came from the prefetch: the prefetched rows
        are used when they were made for a prefix of ``states`` (same objects, same order: rows
        that joined since are appended and filled now), else everything is filled now."""
        pending, self._prefetched = self._prefetched, None
        if pending is None:
            return self._fill(states), 0
        expected, future = pending
        bits = future.result()  # also when unused: no worker may still be running afterwards
        n = len(expected)
        if n > len(states) or any(a is not b for a, b in zip(expected, states)):
            return self._fill(states), 0
        if n == len(states):
            return bits, n
        return np.concatenate([bits, self._fill(states[n:])]), n

    def _fill(self, states: list) -> np.ndarray:
        from guided.bitmask import allocate_bitmask, fill_bitmasks

        return fill_bitmasks(states, allocate_bitmask(len(states), self.vocab.size))


_PREFETCH: list = []


def _prefetch_pool():
    """One background thread for mask prefetching (made on first use)."""
    if not _PREFETCH:
        from concurrent.futures import ThreadPoolExecutor

        _PREFETCH.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="guided-prefetch"))
    return _PREFETCH[0]


def bitmask_to_bool(bits: np.ndarray, size: int, width: int, device: torch.device | str) -> torch.Tensor:
    """Packed int32 rows (``guided.bitmask`` layout) as a bool tensor ``[rows, width]`` on
    ``device``; columns past ``size`` are False.  On an accelerator the packed words are
    sent (32x fewer bytes) and unpacked there."""
    device = torch.device(device)
    rows = bits.shape[0]
    if device.type == "cpu":
        unpacked = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little").view(bool)
        out = np.zeros((rows, width), dtype=bool)
        n = min(size, width)
        out[:, :n] = unpacked[:, :n]
        return torch.from_numpy(out)
    words = torch.from_numpy(bits).to(device, non_blocking=True)
    shifts = torch.arange(32, device=device, dtype=torch.int32)
    unpacked = ((words.unsqueeze(-1) >> shifts) & 1).bool().view(rows, -1)
    out = torch.zeros((rows, width), dtype=torch.bool, device=device)
    n = min(size, width)
    out[:, :n] = unpacked[:, :n]
    return out


@dataclass
class StepResult:
    """One sampler step for a batch of rows.

    ``states[i] is None`` marks a dead row (no valid token had mass): its token is ``-1``
    and its log weight ``-inf``.
    """

    tokens: list[int]
    states: list["ConstraintState | None"]
    log_weights: np.ndarray  # float64, log of the estimate of Z per row (0 under greedy)


def next_token_logprobs(
    logits: torch.Tensor, sampling: Sampling, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Steps 2-4 of the module docstring: ``[rows, columns]`` logits to log-probabilities.

    >>> next_token_logprobs(torch.tensor([[0.0, 1.0, 2.0]]), Sampling(top_k=2)).exp()
    tensor([[0.0000, 0.2689, 0.7311]])
    """
    x = logits.to(dtype)
    if sampling.greedy:
        return torch.log_softmax(x, dim=-1)
    if sampling.temperature != 1.0:
        x = x / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < x.shape[-1]:
        kth = torch.topk(x, sampling.top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1.0:
        # Keep the smallest set of most likely tokens whose mass reaches top_p (at least one).
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = mass_before >= sampling.top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return torch.log_softmax(x, dim=-1)


def untruncated_logprobs(
    logits: torch.Tensor, sampling: Sampling, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Step 2 only (temperature, no top-k/top-p): the truncation fallback's distribution."""
    x = logits.to(dtype)
    if not sampling.greedy and sampling.temperature != 1.0:
        x = x / sampling.temperature
    return torch.log_softmax(x, dim=-1)


class TokenSampler(abc.ABC):
    """A per-token sampler: consumes only :class:`~guided.constraint.ConstraintState`."""

    #: True when ``log_weights`` are meaningful (an estimate of Z).
    weighted: bool = True
    #: True when every step needs every row's full mask: decoding then starts the next
    #: masks on a worker thread as soon as the tokens are chosen, before the forward pass.
    prefetch_masks: bool = False

    @abc.abstractmethod
    def step(
        self, logits: torch.Tensor, states: Sequence["ConstraintState"], ctx: StepContext
    ) -> StepResult:
        """Choose one token per row of ``logits`` (``[len(states), columns]``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def masked_draw(
    logprobs: torch.Tensor, mask: torch.Tensor, ctx: StepContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact draws from ``p * c / Z`` for every row, and ``log Z``; rows with ``Z == 0`` give -1.

    ``logprobs`` and ``mask`` are ``[rows, columns]`` on the same device. Draws use the
    inverse CDF with one uniform per row (cheaper than ``torch.multinomial`` on CPU).
    """
    columns = None
    counts = mask.sum(dim=-1, dtype=torch.int32)  # (an int32 sum: several times faster than count_nonzero)
    widest = int(counts.max()) if counts.numel() else 0
    if 0 < widest <= logprobs.shape[-1] // 2:
        # Compact rows: only the allowed columns, in ascending order, padded with -inf.  The
        # same law and, for the same uniform, the same token (the full row's CDF only adds
        # zeros between them), at a fraction of the cost: exp/logsumexp over mostly -inf
        # entries and a float64 cumsum over the whole vocabulary dominate a masked step.
        rows, cols = mask.nonzero(as_tuple=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(rows.shape[0], device=rows.device) - starts[rows]
        columns = torch.zeros((mask.shape[0], widest), dtype=torch.long, device=mask.device)
        columns[rows, slot] = cols
        masked = torch.full((mask.shape[0], widest), float("-inf"), dtype=logprobs.dtype, device=logprobs.device)
        masked[rows, slot] = logprobs[rows, cols]
    else:
        masked = logprobs.masked_fill(~mask, float("-inf"))
    log_z = torch.logsumexp(masked, dim=-1)
    alive = torch.isfinite(log_z)
    if ctx.sampling.greedy:
        tokens = masked.argmax(dim=-1)
    else:
        shift = torch.where(alive, log_z, 0.0)[:, None]
        tokens = inverse_cdf_draws(masked - shift, 1, ctx.generator).squeeze(-1)
    if columns is not None:
        tokens = columns.gather(1, tokens[:, None]).squeeze(-1)
    tokens = torch.where(alive, tokens, -1)
    return tokens, log_z


def inverse_cdf_draws(logw: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` i.i.d. draws per row in proportion to ``exp(logw)`` (``[rows, columns]``; unnormalised).

    Inverse CDF with ``n`` uniforms per row, the running sum in float64 (a float32 sum would
    quantise small probabilities); cheaper than ``torch.multinomial`` on CPU. Rows without
    mass return arbitrary ids.
    """
    cdf = torch.cumsum(torch.exp(logw.float()).double(), dim=-1)
    total = cdf[:, -1:]
    u = torch.rand((logw.shape[0], n), generator=generator, device=logw.device, dtype=torch.float64)
    # Strictly below the total, the first cdf entry above the target has positive mass.
    target = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).clamp(max=logw.shape[-1] - 1)
