"""The vLLM processor's own logic, driven through vLLM's real types without starting an engine:
request arguments and their 400s, rows kept through every kind of ``BatchUpdate``, and the law
of AWRS rows (chi-square against exact enumeration).

The processor is built as vLLM builds it, from a config naming the model's tokenizer (the real
Llama-3 tokenizer of the test model); ``BatchUpdate`` and ``SamplingParams`` are vLLM's.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
from vllm_support import vllm_import_error, vllm_test_model

_why = vllm_import_error()
if _why:
    pytest.skip(_why, allow_module_level=True)

import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from scipy.stats import chisquare  # noqa: E402
from vllm import SamplingParams  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from guided.integrations.vllm import GuidedLogitsProcessor, guided_request  # noqa: E402

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["n"], "additionalProperties": False}
REQUESTS = {  # the extra_args of the requests the property test mixes
    "regex": {"guided_regex": r"[0-9]{1,3}(-[a-z]{1,2})?"},
    "json": {"guided_json": SCHEMA},
    "choice": {"guided_choice": ["yes", "no", "maybe"]},
    "awrs": {"guided_regex": r"[a-c]{1,4}", "guided_sampler": "awrs"},
    "plain": {},
}


@pytest.fixture(scope="module")
def processor() -> GuidedLogitsProcessor:
    config = types.SimpleNamespace(model_config=types.SimpleNamespace(tokenizer=vllm_test_model()))
    return GuidedLogitsProcessor(config, torch.device("cpu"), False)


# -- request arguments ---------------------------------------------------------------------
@pytest.mark.parametrize("args, place", [
    ({"guided_json": '{"type": "object", "properties": {"a": {"type": "strin"}}}'}, "#/properties/a/type"),
    ({"guided_json": "{not json"}, "not valid JSON"),
    ({"guided_regex": "[0-9]+("}, "position 6"),
    ({"guided_grammar": 'start: item\nitem: "x" other'}, "line 2, column"),
    ({"guided_grammar_name": "cobol"}, "no shipped grammar"),
    ({"guided_regex": "a", "guided_choice": ["b"]}, "choose one"),
    ({"guided_regex": "a", "guided_sampler": "smc"}, "guided_sampler"),
    ({"guided_sampler": "awrs"}, "needs a constraint"),
    ({"guided_choice": "yes"}, "guided_choice"),
    ({"guided_json": "{}", "guided_whitespace": "any"}, "guided_whitespace"),
])
def test_bad_arguments_are_rejected_naming_the_place(args, place):
    with pytest.raises(VLLMValidationError) as caught:
        GuidedLogitsProcessor.validate_params(SamplingParams(extra_args=args))
    assert place in str(caught.value)


def test_requests_without_guided_arguments_are_left_alone():
    assert guided_request(None) is None
    assert guided_request({"other_plugin": 1}) is None
    request = guided_request({"guided_grammar_name": "sql", "guided_sampler": "awrs"})
    assert request.sampler == "awrs"


def test_json_whitespace_is_bounded_by_default_as_in_guided_serve(processor):
    vocab = processor.vocab
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    default = guided_request({"guided_json": schema}).constraint(vocab)
    for text, bounded_ok in [(b'{"a": 1}', True), (b'{\n  "a": 1\n}', True), (b'{\n\n\n"a":1}', False)]:
        state = default.start(vocab).advance_bytes(text)
        assert (state is not None and state.is_accepting()) == bounded_ok, text
    compact = guided_request({"guided_json": schema, "guided_whitespace": "compact"}).constraint(vocab)
    assert compact.start(vocab).advance_bytes(b'{"a": 1}') is None
    assert compact.start(vocab).advance_bytes(b'{"a":1}').is_accepting()


# -- rows follow BatchUpdate ------------------------------------------------------------------
def _expected_allowed(processor, args: dict, output: list[int]) -> tuple[np.ndarray, bool] | None:
    """What a row may emit after ``output`` and whether it may only end (``None``: a plain row)."""
    request = guided_request(args)
    if request is None:
        return None
    vocab = processor.vocab
    state = request.constraint(vocab).start(vocab)
    for token in output:
        state = state.advance(token) if state is not None and not state.is_finished() else state
    closed = state is None or state.is_finished()
    allowed = np.zeros(vocab.size, dtype=bool)
    if closed:
        allowed[sorted(vocab.eos_ids)] = True
    else:
        allowed[:] = state.allowed_mask()
    return allowed, closed


def _random_update(data, batch: dict[int, dict]) -> BatchUpdate | None:
    """Change ``batch`` as vLLM may in one step (removals, then additions, then moves and swaps)
    and return the ``BatchUpdate`` saying so."""
    removed, added, moved = [], [], []
    for _ in range(data.draw(st.integers(0, 2))):
        if batch:
            index = data.draw(st.sampled_from(sorted(batch)))
            removed.append(index)
            del batch[index]
    for _ in range(data.draw(st.integers(0, 2))):
        free = [i for i in range(8) if i not in batch]
        if free:
            index, kind = data.draw(st.sampled_from(free)), data.draw(st.sampled_from(sorted(REQUESTS)))
            # a preempted request comes back with the output it had: replay another one's
            donors = [i for i in batch if batch[i]["kind"] == kind]
            donor = data.draw(st.sampled_from([None, *donors]))
            output = list(batch[donor]["output"]) if donor is not None else []
            batch[index] = {"kind": kind, "output": output}
            if index in removed:
                removed.remove(index)  # vLLM reuses a freed index: it is not reported removed
            added.append((index, SamplingParams(extra_args=REQUESTS[kind], seed=index), [1], output))
    for _ in range(data.draw(st.integers(0, 2))):
        free = [i for i in range(8) if i not in batch]
        if data.draw(st.booleans()) and batch and free:
            a, b = data.draw(st.sampled_from(sorted(batch))), data.draw(st.sampled_from(free))
            batch[b] = batch.pop(a)
            moved.append((a, b, MoveDirectionality.UNIDIRECTIONAL))
        elif len(batch) >= 2:
            a, b = data.draw(st.lists(st.sampled_from(sorted(batch)), min_size=2, max_size=2, unique=True))
            batch[a], batch[b] = batch[b], batch[a]
            moved.append((a, b, MoveDirectionality.SWAP))
    if not (removed or added or moved):
        return None
    return BatchUpdate(batch_size=len(batch), removed=removed, added=added, moved=moved)


@pytest.mark.parametrize("overlap", [True, False], ids=["masks-during-forward", "masks-in-apply"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_rows_follow_adds_removes_moves_swaps_and_preemption(processor, overlap, data):
    processor._overlap = overlap  # GUIDED_VLLM_OVERLAP: masks made in update_state's worker, or in apply
    processor.rows.clear()
    size = processor.vocab.size
    batch: dict[int, dict] = {}  # index -> {"kind", "output"}: what vLLM's persistent batch holds
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    for _ in range(data.draw(st.integers(2, 6))):
        processor.update_state(_random_update(data, batch))
        logits = torch.from_numpy(rng.standard_normal((8, size + 8)).astype(np.float32))  # wider than the vocabulary
        before = logits.clone()
        after = processor.apply(logits)
        for index, request in batch.items():
            expected = _expected_allowed(processor, REQUESTS[request["kind"]], request["output"])
            if expected is None:
                assert torch.equal(after[index], before[index])
                continue
            allowed, closed = expected
            finite = torch.isfinite(after[index]).numpy()
            assert not finite[size:].any()
            if request["kind"] == "awrs" and not closed:
                assert finite.sum() == 1 and allowed[int(np.flatnonzero(finite)[0])]
            else:
                assert np.array_equal(finite[:size], allowed)
            request["output"].append(int(rng.choice(np.flatnonzero(finite))))  # vLLM samples what is left


# -- the law of AWRS rows ---------------------------------------------------------------------
def _row_of_probabilities(vocab, named: dict[bytes, float]) -> torch.Tensor:
    """Logits with ``named`` tokens at the given probabilities, the rest spread evenly."""
    probs = np.full(vocab.size, (1.0 - sum(named.values())) / (vocab.size - len(named)))
    for piece, p in named.items():
        probs[vocab.bytes_to_id[piece]] = p
    return torch.from_numpy(np.log(probs)).float()


def _awrs_draws(processor, args: dict, row: torch.Tensor, temperature: float, n: int, batch: int = 100,
                seeded: bool = True):
    """``n`` tokens drawn by the processor's AWRS rows (``batch`` requests per step, each seeded
    (its own random stream), or not (one stream and one batched step for all))."""
    tokens = []
    for start in range(0, n, batch):
        processor.rows.clear()
        added = [(i, SamplingParams(temperature=temperature, seed=start + i if seeded else None, extra_args=args), [1], [])
                 for i in range(batch)]
        processor.update_state(BatchUpdate(batch_size=batch, removed=[], added=added, moved=[]))
        out = processor.apply(row.expand(batch, -1).clone())
        finite = torch.isfinite(out)
        assert (finite.sum(dim=1) == 1).all()  # exactly one finite logit per row
        tokens += finite.float().argmax(dim=1).tolist()
    return np.asarray(tokens)


@pytest.mark.slow
@pytest.mark.parametrize("seeded", [True, False])
def test_awrs_rows_draw_from_the_masked_distribution(processor, seeded):
    """The processor applies the request's temperature itself, then AWRS's walk: the token's law
    is p*c/Z (what masking gives), with most of the mass on tokens the constraint rejects; rows
    with their own seeds and unseeded rows drawn together in one batched step alike."""
    vocab = processor.vocab
    temperature = 0.7
    named = {b"1": 0.15, b"2": 0.05, b"42": 0.03, b"7": 0.02, b"a": 0.30, b" the": 0.20, b"x": 0.15}
    row = _row_of_probabilities(vocab, named)
    args = {"guided_regex": r"[0-9]+", "guided_sampler": "awrs"}
    tokens = _awrs_draws(processor, args, row, temperature, n=600, seeded=seeded)
    # exact p*c/Z: temperature on the model's row, then the constraint's mask
    start = guided_request(args).constraint(vocab).start(vocab)
    mask = start.allowed_mask()
    p = torch.softmax(row.double() / temperature, dim=-1).numpy()
    target = np.where(mask, p, 0.0) / p[mask].sum()
    assert mask[tokens].all()
    cells = [vocab.bytes_to_id[b] for b in (b"1", b"2", b"42", b"7")]
    observed = [int(np.sum(tokens == t)) for t in cells] + [int(np.sum(~np.isin(tokens, cells)))]
    expected = [target[t] * len(tokens) for t in cells]
    expected.append(len(tokens) - sum(expected))
    cells = sorted(zip(expected, observed))
    while cells[0][0] < 5:  # pool the smallest cells until each expects at least 5
        (e0, o0), (e1, o1) = cells[0], cells[1]
        cells = sorted([(e0 + e1, o0 + o1)] + cells[2:])
    expected, observed = zip(*cells)
    assert chisquare(observed, expected).pvalue > 1e-3, (observed, np.round(expected, 1))


def test_awrs_rows_under_greedy_take_the_constrained_argmax(processor):
    vocab = processor.vocab
    row = _row_of_probabilities(vocab, {b"a": 0.5, b"7": 0.2, b"42": 0.1})
    tokens = _awrs_draws(processor, {"guided_regex": r"[0-9]+", "guided_sampler": "awrs"}, row, 0.0, n=10, batch=10)
    assert set(tokens.tolist()) == {vocab.bytes_to_id[b"7"]}


def test_a_finished_row_allows_only_its_end_tokens(processor):
    vocab = processor.vocab
    processor.rows.clear()
    one = vocab.bytes_to_id[b"1"]
    eos = min(vocab.eos_ids)
    output = [one, eos]  # a choice completed, then EOS: the request may only end
    params = SamplingParams(extra_args={"guided_choice": ["1"]})
    processor.update_state(BatchUpdate(batch_size=1, removed=[], added=[(0, params, [1], output)], moved=[]))
    out = processor.apply(torch.zeros(1, vocab.size))
    assert set(np.flatnonzero(torch.isfinite(out[0]).numpy()).tolist()) == set(vocab.eos_ids)
    assert math.isinf(float(out[0, one]))


def test_a_token_that_arrives_after_update_state_is_taken_into_account(processor):
    """Asynchronous scheduling may fill a row's output after ``update_state`` started its masks:
    ``apply`` then redoes them for the output as it is."""
    processor._overlap = True
    processor.rows.clear()
    vocab = processor.vocab
    args = {"guided_regex": r"[0-9]{1,3}(-[a-z]{1,2})?"}
    output: list[int] = []
    params = SamplingParams(extra_args=args)
    processor.update_state(BatchUpdate(batch_size=1, removed=[], added=[(0, params, [1], output)], moved=[]))
    processor.apply(torch.zeros(1, vocab.size))
    processor.update_state(None)  # the worker makes the masks for the output as it is now
    output.append(vocab.bytes_to_id[b"12"])  # ... and then the step's token arrives
    finite = torch.isfinite(processor.apply(torch.zeros(1, vocab.size))[0]).numpy()
    allowed, _ = _expected_allowed(processor, args, output)
    assert np.array_equal(finite, allowed)
    assert not np.array_equal(allowed, _expected_allowed(processor, args, [])[0])


def test_a_schema_is_built_once_for_the_arrival_check_and_the_rows(processor):
    """In one process (offline ``LLM``) the rows use the constraint the arrival check built; a
    shipped grammar is not built to be checked (it always builds)."""
    import guided.integrations.vllm as plugin

    schema = {"type": "object", "properties": {"built_once": {"type": "integer"}}, "required": ["built_once"]}
    GuidedLogitsProcessor.validate_params(SamplingParams(extra_args={"guided_json": schema}))
    checked = plugin._built(guided_request({"guided_json": schema}).spec)
    assert guided_request({"guided_json": schema}).constraint(processor.vocab) is checked
    before = plugin._built.cache_info().currsize
    GuidedLogitsProcessor.validate_params(SamplingParams(extra_args={"guided_grammar_name": "arithmetic"}))
    assert plugin._built.cache_info().currsize == before
