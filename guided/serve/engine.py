"""The decoding engine behind the surfaces (server, IDE backend): batched rows with their own
constraints, budgets, stop strings, streaming, cancellation and deadlines.

``guided.generate`` decodes a batch under *one* constraint and one budget; a server's batch
mixes requests, so each row here carries its own start state, ``max_tokens``, stop strings and
text callback, and a row that ends (EOS, budget, stop string, cancelled, past its deadline, dead
end) leaves the batch at once (``LMBatch.select``) without disturbing the others.

    >>> engine = Engine(model, tokenizer, name="tiny")
    >>> [result] = engine.run_batch([engine.request("x = ", Regex(r"[0-9]+"), max_tokens=8)])
    >>> result.text, result.finish_reason            # ('42', 'stop')

Rows of one batch share the sampler, the sampling parameters and the random stream (see
:meth:`EngineRequest.batch_key`); the samplers' per-token step is the library's own
(:mod:`guided.samplers`), so the output distribution is the one ``guided.generate`` gives.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from guided.constraint import Constraint, ConstraintState, FinishedState
from guided.samplers import AWRS, SMC, Masking, Sampling, StepContext, TokenSampler
from guided.samplers.lm import start_batch
from guided.vocab import Vocabulary

__all__ = [
    "AnyText",
    "Engine",
    "EngineRequest",
    "EngineResult",
    "SAMPLERS",
    "load_model",
    "make_sampler",
]

SAMPLERS = ("awrs", "masking", "smc")


# ---------------------------------------------------------------------------------------------
# The "no constraint" constraint: what a request without response_format / guided_* gets.
# ---------------------------------------------------------------------------------------------
class AnyText(Constraint):
    """Every non-special token, EOS at any point: unconstrained generation through the same loop.

    >>> AnyText().start(vocab).allowed_mask().sum() == vocab.usable.sum() + len(vocab.eos_ids)
    """

    def compile(self, vocab: Vocabulary) -> np.ndarray:
        return vocab.usable | vocab.eos_mask

    def initial_state(self, compiled: np.ndarray, vocab: Vocabulary) -> "AnyTextState":
        return AnyTextState(vocab, compiled)

    def __repr__(self) -> str:
        return "AnyText()"


class AnyTextState(ConstraintState):
    __slots__ = ("vocab", "_mask")

    def __init__(self, vocab: Vocabulary, mask: np.ndarray):
        self.vocab = vocab
        self._mask = mask

    def advance_bytes(self, data: bytes) -> "AnyTextState":
        return self

    def advance(self, token_id: int) -> ConstraintState | None:
        if not 0 <= token_id < len(self._mask) or not self._mask[token_id]:
            return None
        return FinishedState(self.vocab) if token_id in self.vocab.eos_ids else self

    def allows(self, token_id: int) -> bool:
        return 0 <= token_id < len(self._mask) and bool(self._mask[token_id])

    def is_accepting(self) -> bool:
        return True

    def allowed_mask(self) -> np.ndarray:
        return self._mask.copy()


# ---------------------------------------------------------------------------------------------
# Model loading shared by the CLI, the server and the IDE backend.
# ---------------------------------------------------------------------------------------------
def load_model(path: str | None = None, tokenizer: str | None = None, device: str = "auto"):
    """``(model, tokenizer, name)``: the embedded default model, or a Hugging Face folder.

    ``tokenizer`` is a built-in encoding name (``llama3``, ``qwen3``, ``cl100k``, ``o200k``) or a
    tokenizer folder; by default the model folder's own tokenizer, else Llama-3.

        >>> model, tok, name = load_model()                       # the embedded model
        >>> model, tok, name = load_model("runs/target", device="cuda")
    """
    import os

    from guided.tokenizers import ENCODINGS, load_tokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if path is None:
        from guided.models import default_model_path, load_default_model

        model, tok = load_default_model()
        name = "guided-default"
        try:
            name = os.path.basename(os.path.normpath(str(default_model_path()))) or name
            name = "guided-default" if name == "default" else name
        except Exception:  # noqa: BLE001 - the name is cosmetic
            pass
    else:
        from transformers import AutoModelForCausalLM

        if not os.path.isdir(path):
            raise FileNotFoundError(f"--model {path}: not a folder with a Hugging Face model (config.json)")
        dtype = torch.float32 if device == "cpu" else "auto"
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tok = None
        name = os.path.basename(os.path.normpath(path))
        if tokenizer is None:
            try:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(path)
            except Exception:  # noqa: BLE001 - a folder without tokenizer files
                tok = load_tokenizer("llama3")
    if tokenizer is not None:
        if tokenizer in ENCODINGS:
            tok = load_tokenizer(tokenizer)
        else:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tokenizer)
    model.to(device)
    model.eval()
    return model, tok, name


def make_sampler(name: str, particles: int = 8) -> TokenSampler | SMC:
    """``"awrs"`` / ``"masking"`` / ``"smc"`` to a sampler object."""
    if name == "awrs":
        return AWRS()
    if name == "masking":
        return Masking()
    if name == "smc":
        return SMC(n_particles=particles)
    raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, not {name!r}")


# ---------------------------------------------------------------------------------------------
# Requests and results
# ---------------------------------------------------------------------------------------------
TextCallback = Callable[[str], None]


@dataclass
class EngineRequest:
    """One row to decode. ``on_text`` receives text deltas as they become final (worker thread)."""

    prompt_ids: list[int]
    state: ConstraintState
    max_tokens: int = 16
    sampling: Sampling = field(default_factory=Sampling)
    sampler: str = "awrs"
    particles: int = 8
    seed: int | None = None
    stop: tuple[str, ...] = ()
    on_text: TextCallback | None = None
    #: ``on_step(text_bytes, state)`` after every token (the IDE picks its cut points with it).
    on_step: Callable[[bytes, ConstraintState], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None  # time.monotonic() after which the row stops ("deadline")
    group: object = None  # rows of one API request share a group (and may share a seed)
    #: log-probabilities of the chosen tokens: ``None`` (off) or how many top alternatives
    logprobs: int | None = None
    logprobs_mode: str = "raw"  # "raw": the model's distribution; "constrained": renormalised on the allowed tokens
    #: ``on_token(entry)`` after each token, before its text (entry: token id, logprob, top alternatives)
    on_token: Callable[[dict], None] | None = None
    #: ``on_done(result)`` when the row has finished (decode loop's thread)
    on_done: Callable[["EngineResult"], None] | None = None
    # OpenAI's logit adjustments: minus presence_penalty for a token already generated, minus
    # frequency_penalty times its count, plus logit_bias[token]; applied before sampling
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None

    def adjusts_logits(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.logit_bias)

    def batch_key(self) -> tuple:
        """Rows with equal keys may share a batch (same sampler, sampling and random stream)."""
        s = self.sampling
        seeded = None if self.seed is None else (self.seed, id(self.group))
        particles = self.particles if self.sampler == "smc" else 0
        return (self.sampler, particles, s.temperature, s.top_k, s.top_p, seeded)


@dataclass
class EngineResult:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or stop string), "length", "cancelled", "deadline", "error"
    prompt_tokens: int
    log_weight: float = 0.0
    error: str | None = None  # dead end or failure of this row
    state: ConstraintState | None = None  # the constraint state at the end
    logprobs: list[dict] | None = None  # per token: {"id", "logprob", "top": [(id, logprob), ...]}

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


class _RowText:
    """Incremental UTF-8 text of one row with stop strings; hands out only final text."""

    def __init__(self, stop: Sequence[str], on_text: TextCallback | None):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = tuple(s for s in stop if s)
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""
        self.sent = 0
        self.on_text = on_text
        self.stopped = False

    def feed(self, data: bytes, final: bool = False) -> None:
        self.text += self._decoder.decode(data, final=final)
        if self.stop:
            hits = [i for i in (self.text.find(s) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
                final = True
        upto = len(self.text) if final else max(self.sent, len(self.text) - self.hold)
        if self.on_text is not None and upto > self.sent:
            self.on_text(self.text[self.sent : upto])
        self.sent = max(self.sent, upto)

    def finish(self) -> None:
        self.feed(b"", final=True)


class _Aborted(Exception):
    pass


class _WatchedBatch:
    """An LMBatch proxy for SMC runs: aborts the run when every row was cancelled."""

    def __init__(self, inner, requests: Sequence[EngineRequest]):
        self._inner = inner
        self._requests = requests

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _check(self) -> None:
        now = time.monotonic()
        if all(r.cancelled.is_set() or (r.deadline is not None and now > r.deadline) for r in self._requests):
            raise _Aborted

    def append(self, tokens):
        self._check()
        return self._inner.append(tokens)

    def extend(self, tokens):
        self._check()
        return self._inner.extend(tokens)


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------
class Engine:
    """One model and tokenizer; :meth:`run_batch` decodes requests with equal batch keys.

    Not re-entrant: one caller at a time (the server's worker, the IDE's worker).
    """

    def __init__(self, model, tokenizer, name: str = "guided"):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.vocab = Vocabulary.from_tokenizer(tokenizer)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else int(min(self.vocab.eos_ids))
        config = getattr(model, "config", None)
        self.max_context = int(getattr(config, "max_position_embeddings", 0) or 0) or None
        self._lock = threading.Lock()

    # -- building requests ------------------------------------------------------------------
    def encode(self, prompt: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
        if not ids:  # an empty prompt still needs one position to predict from
            bos = getattr(self.tokenizer, "bos_token_id", None)
            ids = [int(bos) if bos is not None else self.pad_id]
        return list(ids)

    def request(self, prompt: str | list[int], constraint: Constraint | ConstraintState | None = None, **kw) -> EngineRequest:
        """An :class:`EngineRequest` from a prompt (text or ids) and a constraint (or a state)."""
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if constraint is None:
            constraint = AnyText()
        state = constraint.start(self.vocab) if isinstance(constraint, Constraint) else constraint
        return EngineRequest(prompt_ids=ids, state=state, **kw)

    # -- decoding ---------------------------------------------------------------------------
    def run_batch(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        """Decode ``requests`` together and return their results (rows may mix samplers and
        sampling parameters: see :class:`DecodeLoop`)."""
        if not requests:
            return []
        results: dict[int, EngineResult] = {}
        hooks = [r.on_done for r in requests]
        for i, r in enumerate(requests):
            r.on_done = lambda result, i=i: results.__setitem__(i, result)
        try:
            loop = DecodeLoop(self, max_batch=len(requests))
            loop.submit(requests)
            while len(results) < len(requests):
                loop.run_once()
        finally:
            for r, hook in zip(requests, hooks):
                r.on_done = hook
        return [results[i] for i in range(len(requests))]

    def _context(self, requests: Sequence[EngineRequest], device, truncation_fallback: bool = True) -> StepContext:
        first = requests[0]
        seed = None if first.seed is None else first.seed % (1 << 63)
        return StepContext.create(self.vocab, first.sampling, seed=seed, device=device,
                                  truncation_fallback=truncation_fallback)

    @staticmethod
    def _early_reason(r: EngineRequest, now: float, produced: int) -> str | None:
        if r.cancelled.is_set():
            return "cancelled"
        if produced >= r.max_tokens:
            return "length"
        if r.deadline is not None and now > r.deadline:
            return "deadline"
        return None

    def _run_smc(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        first = requests[0]
        sampler = SMC(n_particles=first.particles)
        max_tokens = max(r.max_tokens for r in requests)
        lm = _WatchedBatch(start_batch(self.model, [r.prompt_ids for r in requests], self.pad_id), requests)
        ctx = self._context(requests, lm.device, truncation_fallback=False)
        results = []
        try:
            runs = sampler.run(lm, [r.state for r in requests], ctx, max_tokens, self.pad_id)
        except _Aborted:
            return [EngineResult("", [], "cancelled", len(r.prompt_ids)) for r in requests]
        for r, run in zip(requests, runs):
            particle = run.sample(ctx.rng)
            token_ids = particle.token_ids[: r.max_tokens]
            text = _RowText(r.stop, r.on_text)
            text.feed(self.vocab.decode(t for t in token_ids if t not in self.vocab.special_ids))
            text.finish()
            if text.stopped or (particle.finished and len(token_ids) == len(particle.token_ids)):
                reason = "stop"
            else:
                reason = "length"
            alive = any(p.weight > 0 for p in run.particles)
            results.append(EngineResult(
                text=text.text, token_ids=token_ids, finish_reason=reason if alive else "error",
                prompt_tokens=len(r.prompt_ids), log_weight=float(run.log_z),
                error=None if alive else "every particle died (the constraint could not be completed)",
            ))
        return results


# ---------------------------------------------------------------------------------------------
# Continuous batching
# ---------------------------------------------------------------------------------------------
class JoinableBatch:
    """An :class:`~guided.samplers.lm.HFBatch` that takes new rows between steps.

    New prompts are prefilled on their own and merged in (KV caches, attention masks and
    positions left-padded to a common width); rows that leave are dropped with ``select``, and
    columns no row attends to any more are cropped, so a busy server's cache does not grow
    without bound.

        >>> lm = JoinableBatch(model, pad_id); lm.add([ids_a]); lm.append([tok]); lm.add([ids_b])
    """

    def __init__(self, model, pad_id: int):
        self.model = model
        self.pad_id = pad_id
        self.batch = None  # HFBatch, or None without rows

    @property
    def rows(self) -> int:
        return 0 if self.batch is None else self.batch.rows

    @property
    def logits(self) -> torch.Tensor:
        return self.batch.logits

    def add(self, prompts: Sequence[Sequence[int]]) -> None:
        from guided.samplers.lm import HFBatch

        new = HFBatch(self.model, prompts, self.pad_id)
        if self.batch is None or self.batch.cache is None:
            self.batch = new
            return
        old = self.batch
        width = max(old.attention_mask.shape[1], new.attention_mask.shape[1])
        old_layers = list(_cache_layers(old.cache))
        new_layers = {i: (k, v) for i, k, v in _cache_layers(new.cache)}
        for i, k_old, v_old in old_layers:
            k_new, v_new = new_layers[i]
            _set_cache_layer(old.cache, i, torch.cat([_left_pad(k_old, width, 2), _left_pad(k_new, width, 2)]),
                             torch.cat([_left_pad(v_old, width, 2), _left_pad(v_new, width, 2)]))
        old.attention_mask = torch.cat([_left_pad(old.attention_mask, width, 1), _left_pad(new.attention_mask, width, 1)])
        old.next_position = torch.cat([old.next_position, new.next_position])
        old.logits = torch.cat([old.logits, new.logits])
        old.forward_seconds += new.forward_seconds

    def select(self, keep: Sequence[int]) -> None:
        if not keep:
            self.batch = None
            return
        b = self.batch
        b.select(keep)
        used = b.attention_mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        if first > 0:  # columns every remaining row masks out
            for i, k, v in list(_cache_layers(b.cache)):
                _set_cache_layer(b.cache, i, k[:, :, first:], v[:, :, first:])
            b.attention_mask = b.attention_mask[:, first:]

    def append(self, tokens: Sequence[int]) -> torch.Tensor:
        return self.batch.append(tokens)


def _left_pad(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=x.dtype, device=x.device), x], dim=dim)


def _cache_layers(cache):
    from guided.speculative.ragged import _layers

    return _layers(cache)


def _set_cache_layer(cache, i, keys, values) -> None:
    from guided.speculative.ragged import _set_layer

    _set_layer(cache, i, keys, values)


@dataclass
class _LiveRow:
    request: EngineRequest
    text: _RowText
    state: ConstraintState
    ids: list = field(default_factory=list)
    out: bytes = b""
    log_weight: float = 0.0
    logprobs: list | None = None


class DecodeLoop:
    """Continuous batching: rows join the running batch at the next step and leave the step
    they finish; rows with different samplers, temperatures, top-k/top-p or seeds share the
    forward pass and are sampled group by group (one :class:`StepContext` per group, so a
    seeded request keeps its own random stream).  SMC requests (whole-sequence particle
    systems) run on their own between steps.

    Thread-safe ``submit``; ``run_once`` (one admission and one step) is called from one
    thread only (the server's decoding thread, or :meth:`Engine.run_batch`).  Each row's
    ``on_done(result)`` is called when it finishes.

        >>> loop = DecodeLoop(engine, max_batch=32)
        >>> loop.submit([engine.request("x = ", Regex("[0-9]+"), on_done=print)])
        >>> while loop.busy: loop.run_once()
    """

    def __init__(self, engine: "Engine", max_batch: int = 32):
        self.engine = engine
        self.max_batch = max_batch
        self.incoming: deque[EngineRequest] = deque()
        self.wakeup = threading.Condition()
        self.rows: list[_LiveRow] = []
        self.lm = JoinableBatch(engine.model, engine.pad_id)
        self.contexts: dict[tuple, StepContext] = {}
        self.samplers = {name: make_sampler(name) for name in ("awrs", "masking")}
        self.stats = {"steps": 0, "rows_started": 0, "rows_finished": 0, "tokens": 0, "largest_batch": 0,
                      "errors": 0, "cancelled": 0, "constraint_seconds": 0.0, "forward_seconds": 0.0}

    # -- the queue ------------------------------------------------------------------------------
    def submit(self, requests: Sequence[EngineRequest]) -> None:
        with self.wakeup:
            self.incoming.extend(requests)
            self.wakeup.notify()

    @property
    def queued(self) -> int:
        return len(self.incoming)

    @property
    def running(self) -> int:
        return len(self.rows)

    @property
    def busy(self) -> bool:
        return bool(self.incoming or self.rows)

    def wait(self, timeout: float | None = None) -> None:
        """Block until there is work (or ``timeout``)."""
        with self.wakeup:
            if not self.incoming and not self.rows:
                self.wakeup.wait(timeout)

    # -- one iteration ---------------------------------------------------------------------------
    def run_once(self) -> None:
        with torch.inference_mode():
            try:
                self._admit()
                if self.rows:
                    self._step()
            except Exception as exc:  # noqa: BLE001 - a failing step fails its rows, not the server
                self.stats["errors"] += 1
                rows, self.rows = self.rows, []
                self.lm = JoinableBatch(self.engine.model, self.engine.pad_id)
                for row in rows:
                    self._finish(row, "error", f"generation failed: {type(exc).__name__}: {exc}")
                if not rows:
                    raise

    def _admit(self) -> None:
        engine = self.engine
        new: list[EngineRequest] = []
        now = time.monotonic()
        while self.incoming and len(self.rows) + len(new) < self.max_batch:
            with self.wakeup:
                r = self.incoming[0]
                if r.sampler == "smc":
                    if new:
                        break
                    group = [self.incoming.popleft()]
                    while self.incoming and self.incoming[0].batch_key() == r.batch_key():
                        group.append(self.incoming.popleft())
                else:
                    group = None
                    self.incoming.popleft()
            if group is not None:  # SMC runs whole sequences of particles: on its own, now
                self._run_smc(group)
                continue
            reason = engine._early_reason(r, now, 0)
            if reason is not None:
                self._done(r, EngineResult("", [], reason, len(r.prompt_ids), state=r.state))
                continue
            new.append(r)
        if not new:
            return
        self.lm.add([r.prompt_ids for r in new])
        for r in new:
            self.rows.append(_LiveRow(r, _RowText(r.stop, r.on_text), r.state,
                                      logprobs=[] if r.logprobs is not None else None))
        self.stats["rows_started"] += len(new)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(self.rows))

    def _context(self, key: tuple, r: EngineRequest) -> StepContext:
        ctx = self.contexts.get(key)
        if ctx is None:
            seed = None if r.seed is None else r.seed % (1 << 63)  # any integer the API takes
            ctx = self.contexts[key] = StepContext.create(self.engine.vocab, r.sampling, seed=seed,
                                                          device=self.lm.logits.device)
        return ctx

    def _step(self) -> None:
        vocab = self.engine.vocab
        logits = self.lm.logits
        raw = logits
        if any(row.request.adjusts_logits() for row in self.rows):
            logits = logits.clone()
            for i, row in enumerate(self.rows):
                if row.request.adjusts_logits():
                    _adjust_logits(logits[i], row.request, row.ids)
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(self.rows):
            groups.setdefault(row.request.batch_key(), []).append(i)
        tokens: list[int | None] = [None] * len(self.rows)
        before = [row.state for row in self.rows]
        for key, idx in groups.items():
            first = self.rows[idx[0]].request
            ctx = self._context(key, first)
            if len(ctx.transitions) > 50_000:  # a context lives as long as its group has rows: bound its memo
                ctx.transitions.clear()
            spent = ctx.stats.constraint_seconds
            if len(idx) == len(self.rows):  # one group: the whole batch, no copy
                group_logits = logits
            else:
                group_logits = logits.index_select(0, torch.as_tensor(idx, device=logits.device))
            result = self.samplers[first.sampler].step(group_logits, [before[i] for i in idx], ctx)
            self.stats["constraint_seconds"] += ctx.stats.constraint_seconds - spent
            for j, i in enumerate(idx):
                row = self.rows[i]
                if result.states[j] is None:
                    tokens[i] = -1
                    continue
                tokens[i] = int(result.tokens[j])
                row.state = result.states[j]
                row.log_weight += float(result.log_weights[j])
        self.stats["steps"] += 1
        now = time.monotonic()
        keep: list[int] = []
        for i, row in enumerate(self.rows):
            r = row.request
            token = tokens[i]
            if token == -1:
                self._finish(row, "error", f"the constraint allows no token after {row.text.text!r}")
                continue
            row.ids.append(token)
            self.stats["tokens"] += 1
            special = token in vocab.special_ids
            if row.logprobs is not None and not special:
                entry = _logprob_entry(raw[i], token, r.logprobs, before[i] if r.logprobs_mode == "constrained" else None)
                row.logprobs.append(entry)
                if r.on_token is not None:
                    r.on_token(entry)
            data = b"" if special else vocab.token_bytes[token]
            row.out += data
            row.text.feed(data)
            if r.on_step is not None:
                r.on_step(row.out, row.state)
            if row.state.is_finished() or row.text.stopped:
                self._finish(row, "stop")
                continue
            reason = self.engine._early_reason(r, now, len(row.ids))
            if reason is not None:
                self._finish(row, reason)
                continue
            keep.append(i)
        if len(keep) < len(self.rows):
            self.lm.select(keep)
            self.rows = [self.rows[i] for i in keep]
            live = {row.request.batch_key() for row in self.rows}
            self.contexts = {k: v for k, v in self.contexts.items() if k in live}
        if self.rows:
            self._prefetch_masks()
            before_forward = self.lm.batch.forward_seconds
            self.lm.append([row.ids[-1] for row in self.rows])
            self.stats["forward_seconds"] += self.lm.batch.forward_seconds - before_forward

    def _prefetch_masks(self) -> None:
        """Start the next step's masks for every full-mask group on a worker thread, so they
        are made while the forward pass runs (rows that join a group before the next step are
        filled then, on top of the prefetched ones: :meth:`StepContext.masks`)."""
        groups: dict[tuple, list] = {}
        for row in self.rows:
            if self.samplers[row.request.sampler].prefetch_masks:
                groups.setdefault(row.request.batch_key(), []).append(row.state)
        for key, states in groups.items():
            ctx = self.contexts.get(key)
            if ctx is not None:
                ctx.prefetch_masks(states)

    def _finish(self, row: _LiveRow, reason: str, error: str | None = None) -> None:
        row.text.finish()
        if reason == "cancelled":
            self.stats["cancelled"] += 1
        self._done(row.request, EngineResult(
            text=row.text.text, token_ids=row.ids, finish_reason=reason, prompt_tokens=len(row.request.prompt_ids),
            log_weight=row.log_weight, error=error, state=row.state, logprobs=row.logprobs))

    def _done(self, r: EngineRequest, result: EngineResult) -> None:
        self.stats["rows_finished"] += 1
        if r.on_done is not None:
            r.on_done(result)

    def _run_smc(self, requests: list[EngineRequest]) -> None:
        try:
            results = self.engine._run_smc(requests)
        except Exception as exc:  # noqa: BLE001
            self.stats["errors"] += 1
            results = [EngineResult("", [], "error", len(r.prompt_ids), error=f"generation failed: {exc}")
                       for r in requests]
        self.stats["rows_started"] += len(requests)
        for r, result in zip(requests, results):
            self._done(r, result)


def _adjust_logits(row: torch.Tensor, r: EngineRequest, generated: list[int]) -> None:
    """OpenAI's presence/frequency penalties and logit bias, in place on one row of logits."""
    if generated and (r.presence_penalty or r.frequency_penalty):
        ids, counts = torch.as_tensor(generated, device=row.device).unique(return_counts=True)
        ids_ok = ids < row.shape[0]
        ids, counts = ids[ids_ok], counts[ids_ok].to(row.dtype)
        row[ids] -= r.presence_penalty + r.frequency_penalty * counts
    for token, bias in (r.logit_bias or {}).items():
        if 0 <= token < row.shape[0]:
            row[token] += bias


def _logprob_entry(logits: torch.Tensor, token: int, top: int, state: ConstraintState | None) -> dict:
    """The chosen token's log-probability and the ``top`` most likely tokens: under the model's
    own distribution (``state=None``), or renormalised on the tokens ``state`` allows."""
    logits = logits.float()
    if state is not None:
        mask = torch.from_numpy(np.array(state.allowed_mask()[: logits.shape[-1]], dtype=bool)).to(logits.device)
        if mask.shape[0] < logits.shape[-1]:
            mask = torch.cat([mask, torch.zeros(logits.shape[-1] - mask.shape[0], dtype=torch.bool, device=logits.device)])
        logits = logits.masked_fill(~mask, float("-inf"))
    logprobs = torch.log_softmax(logits, dim=-1)
    entry = {"id": token, "logprob": float(logprobs[token]), "top": []}
    if top:
        values, ids = torch.topk(logprobs, min(top, logprobs.shape[-1]))
        entry["top"] = [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist()) if v > float("-inf")]
    return entry
