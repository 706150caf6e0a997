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
        """Decode ``requests`` (equal :meth:`~EngineRequest.batch_key`) as one batch."""
        if not requests:
            return []
        keys = {r.batch_key() for r in requests}
        if len(keys) != 1:
            raise ValueError(f"requests of one batch must share sampler, sampling and seed: {keys}")
        with self._lock, torch.inference_mode():
            if requests[0].sampler == "smc":
                return self._run_smc(requests)
            return self._run_tokens(requests)

    def _context(self, requests: Sequence[EngineRequest], device, truncation_fallback: bool = True) -> StepContext:
        first = requests[0]
        return StepContext.create(self.vocab, first.sampling, seed=first.seed, device=device,
                                  truncation_fallback=truncation_fallback)

    def _run_tokens(self, requests: Sequence[EngineRequest]) -> list[EngineResult]:
        sampler = make_sampler(requests[0].sampler)
        vocab = self.vocab
        n = len(requests)
        texts = [_RowText(r.stop, r.on_text) for r in requests]
        ids: list[list[int]] = [[] for _ in range(n)]
        out_bytes = [b"" for _ in range(n)]
        states: list[ConstraintState] = [r.state for r in requests]
        log_w = np.zeros(n)
        reasons: list[str | None] = [None] * n
        errors: list[str | None] = [None] * n
        # A request whose budget is 0, already cancelled or past its deadline never starts.
        now = time.monotonic()
        for i, r in enumerate(requests):
            reasons[i] = self._early_reason(r, now, 0)
        active = [i for i in range(n) if reasons[i] is None]
        if active:
            lm = start_batch(self.model, [requests[i].prompt_ids for i in active], self.pad_id)
            ctx = self._context(requests, lm.device)
            while active:
                result = sampler.step(lm.logits, [states[i] for i in active], ctx)
                now = time.monotonic()
                keep: list[int] = []
                for j, i in enumerate(active):
                    state = result.states[j]
                    if state is None:
                        reasons[i] = "error"
                        errors[i] = f"the constraint allows no token after {texts[i].text!r}"
                        continue
                    token = int(result.tokens[j])
                    ids[i].append(token)
                    states[i] = state
                    log_w[i] += float(result.log_weights[j])
                    data = b"" if token in vocab.special_ids else vocab.token_bytes[token]
                    out_bytes[i] += data
                    texts[i].feed(data)
                    r = requests[i]
                    if r.on_step is not None:
                        r.on_step(out_bytes[i], state)
                    if state.is_finished() or texts[i].stopped:
                        reasons[i] = "stop"
                    else:
                        reasons[i] = self._early_reason(r, now, len(ids[i]))
                    if reasons[i] is None:
                        keep.append(j)
                if not keep:
                    break
                if len(keep) < len(active):
                    lm.select(keep)
                active = [active[j] for j in keep]
                lm.append([ids[i][-1] for i in active])
        results = []
        for i, r in enumerate(requests):
            texts[i].finish()
            results.append(EngineResult(
                text=texts[i].text, token_ids=ids[i], finish_reason=reasons[i] or "length",
                prompt_tokens=len(r.prompt_ids), log_weight=float(log_w[i]), error=errors[i], state=states[i],
            ))
        return results

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
