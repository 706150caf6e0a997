"""guided's constraints and samplers inside vLLM: a logits processor for vLLM's V1 interface.

Offline, the class itself (the script needs ``if __name__ == "__main__":``, vLLM starts workers):

    >>> from vllm import LLM, SamplingParams
    >>> from guided.integrations.vllm import GuidedLogitsProcessor
    >>> llm = LLM(model=path, logits_processors=[GuidedLogitsProcessor])
    >>> params = SamplingParams(max_tokens=64, extra_args={"guided_json": {"type": "object"}})
    >>> llm.generate(["A JSON object: "], params)[0].outputs[0].text

Served: ``vllm serve PATH --logits-processors guided.integrations.vllm:GuidedLogitsProcessor``,
and per request ``extra_body={"vllm_xargs": {"guided_regex": "[0-9]+"}}`` from the ``openai``
client. Request arguments (``SamplingParams.extra_args``; at most one constraint):

=========================  =====================================================================
``guided_json``            a JSON Schema (an object, or its JSON text: ``vllm_xargs`` takes strings)
``guided_regex``           a regular expression the whole output matches
``guided_grammar``         Lark EBNF text (start rule ``start``, else the first rule)
``guided_grammar_name``    a grammar shipped with guided: ``json``, ``sql``, ``arithmetic``, ``python``
``guided_choice``          a list of strings; the output is one of them exactly
``guided_sampler``         ``masking`` (default) or ``awrs``
``guided_whitespace``      JSON whitespace: ``bounded`` (default, as ``guided serve``: one space, or one
                           newline plus indentation, per gap), ``compact`` (none) or ``flexible`` (any)
=========================  =====================================================================

A request without them is left untouched. Bad arguments (a malformed schema, regex or grammar)
are rejected when the request arrives (``validate_params``, so HTTP 400 with the place named:
the schema pointer, the regex position, the grammar's line and column); the engine goes on.

How it runs. The processor keeps one row per guided request, keyed by its index in vLLM's
persistent batch and moved exactly as ``BatchUpdate`` says (removed, then added, then moved or
swapped). A row holds the request's constraint state and a live reference to its output
tokens; before each step it advances over the tokens produced since (a request preempted and
re-added with output already generated starts from the beginning of that output). Once the
constraint is finished (or, should vLLM ever produce a token it forbade, dead), the row allows
only the request's end-of-sequence tokens. vLLM calls ``update_state`` every step once the last
step's tokens are in the outputs and before the forward pass; the processor then brings the rows
up to date and fills their masks on a worker thread, so the masks are made while the forward pass
runs and ``apply`` only writes them (a row whose output changed in between, e.g. a token that
arrived late under asynchronous scheduling, is redone in ``apply``; ``GUIDED_VLLM_OVERLAP=0``
makes everything in ``apply``). Compiled constraints are cached by content (LRU,
``GUIDED_VLLM_CACHE`` entries, default 64) in each process.

Samplers. ``masking``: every forbidden token gets ``-inf`` (one mask tensor per step for all
guided rows, filled as one packed bitmask by :func:`guided.bitmask.fill_bitmasks`, rows in
parallel threads); vLLM's own temperature, top-k, top-p and min-p then act on the constrained
distribution, and processed logprobs are the constrained ones. ``awrs``: the processor draws
the token itself with AWRS (:class:`guided.samplers.AWRS`: temperature, then top-k and top-p on
the *model's* distribution, then the constraint, exactly as ``guided.generate(sampler=AWRS())``;
the law is the masked one, ``p * c / Z``) and leaves exactly one finite logit, so vLLM's
sampler returns that token; vLLM's own top-k / top-p / min-p then see a single candidate and
change nothing. Logprobs in ``awrs`` mode: vLLM's default (``raw_logprobs``) reports the model's
unconstrained distribution as in any mode; the processed modes report a point mass (0 for the
chosen token, ``-inf`` for the rest). ``seed`` makes an ``awrs`` request reproducible.

SMC and AWRS weights with vLLM as the language model: :class:`VLLMModel` wraps an ``LLM`` for
``guided.smc`` and ``guided.generate(..., return_weights=True)`` (the result is the same
``SMCResult``, with ``log_z`` and ``posterior()``).

Which model runner: this is vLLM's V1 logits-processor interface, the one vLLM's CPU backend
runs. vLLM 0.32 runs a second interface on GPUs by default (Model Runner V2); there, start vLLM
with ``VLLM_USE_V2_MODEL_RUNNER=0``.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from guided.bitmask import allocate_bitmask, bitmask_words, clear_tokens, fill_bitmasks, set_tokens
from guided.constraint import ConstraintState, FinishedState
from guided.grammars.shipped import SHIPPED_GRAMMARS, load_grammar
from guided.samplers import AWRS, Sampling, StepContext
from guided.samplers.base import bitmask_to_bool
from guided.samplers.lm import LMBatch
from guided.serve.protocol import ConstraintCache, ConstraintSpec, _canonical
from guided.vocab import Vocabulary

__all__ = ["GuidedLogitsProcessor", "GuidedRequest", "VLLMModel", "guided_request"]

SAMPLERS = ("masking", "awrs")
WHITESPACE = ("bounded", "compact", "flexible")
_CONSTRAINT_KEYS = ("guided_json", "guided_regex", "guided_grammar", "guided_grammar_name", "guided_choice")
_NEG_INF = float("-inf")
_CACHE = ConstraintCache(capacity=int(os.environ.get("GUIDED_VLLM_CACHE", "64")))


@dataclass(frozen=True)
class _ShippedGrammarSpec:
    """A shipped grammar by name, cached like a :class:`ConstraintSpec` (``key``, ``build``)."""

    name: str

    @property
    def key(self) -> str:
        return f"shipped\0{self.name}"

    def build(self):
        return load_grammar(self.name)


@dataclass(frozen=True)
class GuidedRequest:
    """What one request's ``extra_args`` ask for: the constraint (by content) and the sampler."""

    spec: ConstraintSpec | _ShippedGrammarSpec
    sampler: str

    def constraint(self, vocab: Vocabulary):
        """The constraint compiled for ``vocab`` (content-cached); raises its ``ConstraintError``."""
        spec = self.spec if isinstance(self.spec, _ShippedGrammarSpec) else _Checked(self.spec)
        return _CACHE.get(spec, vocab)


def guided_request(extra_args: dict[str, Any] | None) -> GuidedRequest | None:
    """Read a request's guided arguments; ``None`` when it has none. Raises ``VLLMValidationError``
    for a bad argument (a malformed schema, regex or grammar included), naming the argument.

        >>> guided_request({"guided_regex": "[0-9]+", "guided_sampler": "awrs"}).sampler
        'awrs'
    """
    args = extra_args or {}
    given = [k for k in _CONSTRAINT_KEYS if args.get(k) is not None]
    if not given:
        for k in ("guided_sampler", "guided_whitespace"):
            if k in args:
                raise VLLMValidationError(f"{k} needs a constraint ({', '.join(_CONSTRAINT_KEYS)})", parameter=k)
        return None
    if len(given) > 1:
        raise VLLMValidationError(f"choose one constraint per request, got: {', '.join(given)}", parameter=given[1])
    key = given[0]
    sampler = args.get("guided_sampler", "masking")
    if sampler not in SAMPLERS:
        raise VLLMValidationError(f"guided_sampler must be one of {SAMPLERS}, not {sampler!r}", parameter="guided_sampler")
    whitespace = args.get("guided_whitespace", "bounded")
    if whitespace not in WHITESPACE:
        raise VLLMValidationError(f"guided_whitespace must be one of {WHITESPACE}, not {whitespace!r}",
                                  parameter="guided_whitespace")
    value = args[key]
    if key == "guided_grammar_name":
        if value not in SHIPPED_GRAMMARS:
            raise VLLMValidationError(f"guided_grammar_name: no shipped grammar {value!r}; choose from "
                                      f"{sorted(SHIPPED_GRAMMARS)}", parameter=key)
        spec: ConstraintSpec | _ShippedGrammarSpec = _ShippedGrammarSpec(value)
    else:
        spec = _spec(key, value, whitespace)
    error = _build_error(spec)
    if error is not None:
        raise VLLMValidationError(error, parameter=key)
    return GuidedRequest(spec, sampler)


def _build_error(spec: ConstraintSpec | _ShippedGrammarSpec) -> str | None:
    """Why ``spec`` does not build (its parse error names the place: schema pointer, regex position,
    grammar line and column), or ``None``. A shipped grammar always builds: it is not built here."""
    if isinstance(spec, _ShippedGrammarSpec):
        return None
    built = _built(spec)
    return str(built) if isinstance(built, ValueError) else None


@lru_cache(maxsize=64)
def _built(spec: ConstraintSpec):
    """``spec`` built, or the error it raised. Every request is checked on arrival; in one
    process (offline ``LLM``) the engine's cache then takes this very object (:class:`_Checked`)
    instead of building it again. (``vllm serve`` checks in its API server process: the engine
    builds its own.)"""
    try:
        return spec.build()
    except ValueError as exc:
        return exc


@dataclass(frozen=True)
class _Checked:
    """A spec the engine's cache builds from what the arrival check built (same ``key``)."""

    spec: ConstraintSpec

    @property
    def key(self) -> str:
        return self.spec.key

    def build(self):
        built = _built(self.spec)
        if isinstance(built, ValueError):
            raise built
        return built


def _spec(key: str, value: Any, whitespace: str) -> ConstraintSpec:
    """The constraint by content (the server's canonical payload, which keeps a schema's key order)."""
    kind = {"guided_json": "json_schema", "guided_regex": "regex", "guided_grammar": "grammar",
            "guided_choice": "choice"}[key]
    if kind == "json_schema":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise VLLMValidationError(f"guided_json is not valid JSON: {exc}", parameter=key) from None
        if not isinstance(value, (dict, bool)):
            raise VLLMValidationError(f"guided_json must be a JSON Schema object, not {type(value).__name__}",
                                      parameter=key)
        value = {"schema": value, "whitespace": whitespace}
    elif kind == "choice":
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            raise VLLMValidationError("guided_choice must be a non-empty list of strings", parameter=key)
    elif not isinstance(value, str):
        raise VLLMValidationError(f"{key} must be a string, not {type(value).__name__}", parameter=key)
    return ConstraintSpec(kind, _canonical(value))


class _Row:
    """One guided request in the batch: its constraint state, kept in step with its output."""

    __slots__ = ("start", "state", "consumed", "output", "end_ids", "ctx", "sampling", "pending")

    def __init__(self, start: ConstraintState | None, output: list[int], end_ids: list[int],
                 sampling: Sampling | None = None, ctx: StepContext | None = None):
        self.start = start
        self.state = start
        self.consumed: list[int] = []
        self.output = output  # vLLM's live list of the request's output tokens
        self.end_ids = end_ids
        self.sampling = sampling  # AWRS rows: the request's temperature, top-k and top-p
        self.ctx = ctx  # seeded AWRS rows: the request's own random stream (others share their group's)
        self.pending: tuple[int, ConstraintState | None] | None = None  # AWRS: token drawn, its state

    def sync(self) -> ConstraintState | None:
        """Advance over the tokens produced since the last step (from the start if the output
        no longer extends what was read: a preempted request recomputed)."""
        output = self.output
        n = len(self.consumed)
        if len(output) < n or output[:n] != self.consumed:
            self.state, self.consumed, self.pending = self.start, [], None
            n = 0
        for token in output[n:]:
            if token < 0:  # a placeholder of asynchronous scheduling: not known yet
                break
            token = int(token)
            if self.pending is not None and self.pending[0] == token:
                nxt = self.pending[1]  # AWRS already advanced the state by the token it drew
            elif self.state is None or self.state.is_finished():
                nxt = self.state
            else:
                nxt = self.state.advance(token)
            self.pending = None
            self.state = nxt
            self.consumed.append(token)
        return self.state

    def behind(self) -> bool:
        """True when the output has changed since the last :meth:`sync` (a token arrived late,
        or the request was preempted)."""
        output, n = self.output, len(self.consumed)
        if len(output) < n or output[:n] != self.consumed:
            return True
        return len(output) > n and output[n] >= 0

    def closed(self) -> bool:
        """True when only end tokens may follow: the constraint is finished, or dead."""
        return self.state is None or self.state.is_finished()


class GuidedLogitsProcessor(LogitsProcessor):
    """vLLM V1 logits processor applying each request's guided constraint (see the module docstring)."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        guided_request(sampling_params.extra_args)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        from transformers import AutoTokenizer

        model_config = vllm_config.model_config
        tokenizer = AutoTokenizer.from_pretrained(
            model_config.tokenizer,
            revision=getattr(model_config, "tokenizer_revision", None),
            trust_remote_code=bool(getattr(model_config, "trust_remote_code", False)),
        )
        self.vocab = Vocabulary.from_tokenizer(tokenizer)
        self.device = device
        self.rows: dict[int, _Row] = {}
        self.awrs = AWRS()
        self._bits: np.ndarray | None = None  # the step's packed mask, reused
        self._contexts: dict[Sampling, StepContext] = {}  # unseeded AWRS rows' streams, by sampling
        self._width = int(model_config.get_vocab_size()) if hasattr(model_config, "get_vocab_size") else 0
        # masks made during the forward pass (GUIDED_VLLM_OVERLAP=0: in apply, after it)
        self._overlap = os.environ.get("GUIDED_VLLM_OVERLAP", "1") != "0"
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guided-vllm-masks")
        self._pending: Future | None = None

    def is_argmax_invariant(self) -> bool:
        return False  # the constrained argmax is not the model's argmax

    # -- batch bookkeeping ---------------------------------------------------------------
    def update_state(self, batch_update: BatchUpdate | None) -> None:
        # called every step after the last step's tokens are in the outputs and before the
        # forward pass: the next masks are made on a worker thread while the forward pass runs
        self._take_prepared()  # a prepared step never applied (no rows were sampled): drop it
        if batch_update is not None:
            self._update_rows(batch_update)
        self._start_prepare()

    def _update_rows(self, batch_update: BatchUpdate) -> None:
        rows = self.rows
        for index in batch_update.removed:
            rows.pop(index, None)
        for index, params, _prompt, output in batch_update.added:
            row = self._new_row(params, output)
            if row is None:
                rows.pop(index, None)  # the slot's previous occupant is gone
            else:
                rows[index] = row
        for a, b, direction in batch_update.moved:
            row_a = rows.pop(a, None)
            row_b = rows.pop(b, None)
            if row_a is not None:
                rows[b] = row_a
            if direction == MoveDirectionality.SWAP and row_b is not None:
                rows[a] = row_b

    def _new_row(self, params: SamplingParams, output: list[int]) -> _Row | None:
        try:
            request = guided_request(params.extra_args)
        except ValueError:
            return None  # validate_params rejected it on arrival; never reached in vLLM
        if request is None:
            return None
        vocab = self.vocab
        end_ids = sorted(set(params.all_stop_token_ids) & vocab.eos_ids) or sorted(vocab.eos_ids)
        try:
            start = request.constraint(vocab).start(vocab)
        except ValueError:
            start = None  # cannot compile here (validated on arrival): the row may only end
        if request.sampler != "awrs":
            return _Row(start, output, end_ids)
        top_k = params.top_k if params.top_k and params.top_k > 0 else None
        top_p = params.top_p if params.top_p < 1.0 else None
        sampling = Sampling(temperature=max(params.temperature, 0.0), top_k=top_k, top_p=top_p)
        ctx = None if params.seed is None else StepContext.create(vocab, sampling, seed=params.seed)
        return _Row(start, output, end_ids, sampling, ctx)

    # -- the step ------------------------------------------------------------------------
    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        prepared = self._take_prepared()
        if prepared is None or any(row.behind() for row in self.rows.values()):
            prepared = self._prepare()
        masked, drawn, bits = prepared
        for members in drawn.values():
            self._awrs_rows(logits, members)
        if masked:
            self._apply_mask(logits, masked, bits)
        return logits

    def _prepare(self) -> tuple[list, dict, np.ndarray | None]:
        """Bring every row up to its output and fill the masks of the rows that are masked:
        ``(masked rows, AWRS rows by random stream, their packed bitmask)``. Runs on a worker
        thread while vLLM's forward pass runs (started by ``update_state``), or in ``apply``."""
        masked: list[tuple[int, _Row]] = []
        drawn: dict[Sampling, list[tuple[int, _Row]]] = {}  # AWRS rows by sampling
        for index, row in sorted(self.rows.items()):
            row.sync()
            if row.sampling is not None and not row.closed():
                drawn.setdefault(row.sampling, []).append((index, row))
            else:
                masked.append((index, row))
        return masked, drawn, self._fill_masks(masked) if masked else None

    def _start_prepare(self) -> None:
        if self._overlap and self.rows:
            self._pending = self._worker.submit(self._prepare)

    def _take_prepared(self):
        """The prepared step, once its worker is done (``None`` if none was started); an error
        of the worker's is raised here, in vLLM's step."""
        pending, self._pending = self._pending, None
        return None if pending is None else pending.result()

    def _fill_masks(self, masked: Sequence[tuple[int, _Row]]) -> np.ndarray:
        """One packed bitmask for every masked row (open rows filled in parallel by
        :func:`fill_bitmasks`), end tokens set as the request ends."""
        vocab = self.vocab
        bits = self._bitmask(len(masked), max(self._width, vocab.size))
        open_rows = [i for i, (_, row) in enumerate(masked) if not row.closed()]
        fill_bitmasks([masked[i][1].state for i in open_rows], bits, rows=open_rows)
        eos = sorted(vocab.eos_ids)
        for i, (_, row) in enumerate(masked):
            if row.closed():
                bits[i] = 0
                set_tokens(bits[i], row.end_ids)
            elif row.state.is_accepting():  # end with what ends this request in vLLM
                clear_tokens(bits[i], eos)
                set_tokens(bits[i], row.end_ids)
        return bits

    def _apply_mask(self, logits: torch.Tensor, masked: Sequence[tuple[int, _Row]], bits: np.ndarray) -> None:
        """Forbidden columns get ``-inf``: in place on a slice when the rows are consecutive
        (the usual case), else through an index."""
        width = logits.shape[-1]
        forbid = ~bitmask_to_bool(bits, self.vocab.size, width, logits.device)
        first, last = masked[0][0], masked[-1][0]
        if last - first + 1 == len(masked):
            logits[first : last + 1].masked_fill_(forbid, _NEG_INF)
        else:
            index = torch.as_tensor([i for i, _ in masked], device=logits.device)
            logits[index] = logits[index].masked_fill(forbid, _NEG_INF)

    def _bitmask(self, rows: int, size: int) -> np.ndarray:
        """A zeroed int32 bitmask of ``rows`` rows, reusing one buffer across steps."""
        words = bitmask_words(size)
        buf = self._bits
        if buf is None or buf.shape[0] < rows or buf.shape[1] != words:
            buf = self._bits = allocate_bitmask(max(rows, 2 * (0 if buf is None else buf.shape[0])), size)
        out = buf[:rows]
        out.fill(0)
        return out

    def _awrs_rows(self, logits: torch.Tensor, members: Sequence[tuple[int, _Row]]) -> None:
        """Draw the tokens of AWRS rows with one sampling in one batched step (a seeded row
        draws from its own random stream, unseeded rows share one), and leave each drawn
        token as its row's only finite logit."""
        shared = self._shared_context(members[0][1].sampling)
        contexts = [row.ctx if row.ctx is not None else shared for _, row in members]
        index = torch.as_tensor([i for i, _ in members], device=logits.device)
        states = [_EndingAs(row.state, row.end_ids) for _, row in members]
        result = self.awrs.step_each(logits[index].float(), states, contexts)
        logits[index] = _NEG_INF
        for j, (i, row) in enumerate(members):
            token, nxt = result.tokens[j], result.states[j]
            if token < 0:  # nothing valid has mass: end here
                logits[i, row.end_ids] = 0.0
                continue
            logits[i, token] = 0.0
            row.pending = (token, nxt.inner if isinstance(nxt, _EndingAs) else nxt)

    def _shared_context(self, sampling: Sampling) -> StepContext:
        """The random stream (fresh entropy) and transition memo of unseeded AWRS rows with
        ``sampling`` (at most 64 samplings kept; AWRS bounds each memo itself)."""
        ctx = self._contexts.get(sampling)
        if ctx is None:
            if len(self._contexts) >= 64:
                self._contexts.clear()
            ctx = self._contexts[sampling] = StepContext.create(self.vocab, sampling)
        return ctx


class _EndingAs(ConstraintState):
    """``state`` whose end-of-sequence tokens are ``end_ids`` (the ones vLLM stops this request on)."""

    def __init__(self, inner: ConstraintState, end_ids: Sequence[int]):
        self.inner = inner
        self.vocab = inner.vocab
        self.end_ids = frozenset(end_ids)

    def advance_bytes(self, data: bytes):
        return self.inner.advance_bytes(data)

    def advance(self, token_id: int):
        if token_id in self.vocab.eos_ids:
            ok = token_id in self.end_ids and self.inner.is_accepting()
            return FinishedState(self.vocab) if ok else None
        nxt = self.inner.advance(token_id)
        return None if nxt is None else _EndingAs(nxt, self.end_ids)

    def allows(self, token_id: int) -> bool:
        if token_id in self.vocab.eos_ids:
            return token_id in self.end_ids and self.inner.is_accepting()
        return self.inner.allows(token_id)

    def is_accepting(self) -> bool:
        return self.inner.is_accepting()

    def is_live(self) -> bool:
        return self.inner.is_live()

    def cache_key(self):
        key = self.inner.cache_key()
        return None if key is None else ("ending", self.end_ids, key)

    def allowed_mask(self) -> np.ndarray:
        mask = np.array(self.inner.allowed_mask(), dtype=bool)
        if self.inner.is_accepting():
            mask[list(self.vocab.eos_ids)] = False
            mask[list(self.end_ids)] = True
        return mask


class VLLMModel:
    """A vLLM engine as the language model of ``guided.generate`` and ``guided.smc``: the
    next-token log-probabilities of every row (particle) come from vLLM, one ``generate`` call
    per step for all rows, each row a whole token sequence (vLLM's prefix cache shares the
    particles' common prefixes, so only new tokens cost a forward pass).

        >>> llm = LLM(model=path, max_logprobs=-1, enable_prefix_caching=True)
        >>> result = guided.smc(VLLMModel(llm), tokenizer, "n = ", guided.Regex(r"[0-9]{2}"), n_particles=16)
        >>> result.posterior(), result.log_z

    The distribution is vLLM's raw one (``logprobs=-1``: the whole vocabulary, before any
    processing), so guided applies temperature, top-k/top-p and the constraint itself, exactly
    as with a Hugging Face model. Rows with the same tokens are asked once.
    """

    def __init__(self, llm):
        self.llm = llm
        self.width = int(llm.llm_engine.model_config.get_vocab_size())

    def start_batch(self, prompt_ids: Sequence[Sequence[int]], pad_id: int) -> "_VLLMBatch":
        return _VLLMBatch(self, prompt_ids)

    def next_logprobs(self, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[len(sequences), width]`` next-token log-probabilities after each sequence."""
        from vllm.inputs import TokensPrompt

        unique = list(dict.fromkeys(tuple(s) for s in sequences))
        params = SamplingParams(max_tokens=1, temperature=1.0, logprobs=-1, detokenize=False)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(s)) for s in unique], params, use_tqdm=False)
        table = torch.full((len(unique), self.width), _NEG_INF)
        for i, out in enumerate(outputs):
            logprobs = out.outputs[0].logprobs[0]  # {token id: Logprob} over the whole vocabulary
            ids = torch.tensor(list(logprobs.keys()), dtype=torch.long)
            table[i, ids] = torch.tensor([lp.logprob for lp in logprobs.values()], dtype=torch.float32)
        where = {s: i for i, s in enumerate(unique)}
        return table[[where[tuple(s)] for s in sequences]]


class _VLLMBatch(LMBatch):
    """Rows as token sequences; each step asks vLLM for every row's next-token distribution."""

    def __init__(self, model: VLLMModel, prompt_ids: Sequence[Sequence[int]]):
        self.model = model
        self.sequences = [list(p) for p in prompt_ids]
        self.logits = model.next_logprobs(self.sequences)

    def append(self, tokens: Sequence[int]) -> torch.Tensor:
        for sequence, token in zip(self.sequences, tokens):
            sequence.append(int(token))
        self.logits = self.model.next_logprobs(self.sequences)
        return self.logits

    def select(self, index: Sequence[int]) -> None:
        index = list(index)
        self.sequences = [list(self.sequences[i]) for i in index]
        self.logits = self.logits[index]
