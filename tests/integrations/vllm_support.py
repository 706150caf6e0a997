"""What the vLLM tests share: the model vLLM can serve, and whether vLLM is importable here.

vLLM's CPU attention needs a head size of 32 or 64. The embedded default model is used once its
``config.json`` says so; until then, a small random-init Llama with the real Llama-3 tokenizer
(hidden 64, 2 heads: head size 32), built once into guided's cache. Its weights are drawn wide
(``initializer_range`` 0.5) so that next-token scores are far apart and greedy decoding does not
hinge on rounding differences between vLLM's kernels and Hugging Face's.

    >>> path = vllm_test_model()
"""

from __future__ import annotations

import json

from model_subprocess import random_llama3  # tests/: the random test Llama, built once

VLLM_HEAD_DIMS = (32, 64)  # what vLLM's CPU attention accepts (it refuses 12)


def vllm_import_error() -> str | None:
    """Why vLLM cannot be used in this interpreter (``None``: it can)."""
    try:
        import vllm  # noqa: F401
        from vllm.v1.sample.logits_processor import LogitsProcessor  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure means: not here
        return f"vllm is not importable here ({type(exc).__name__}); run ./dev vllm-test"
    return None


def _head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def embedded_model_if_servable() -> str | None:
    """The embedded default model's folder when vLLM can run it, else ``None``."""
    from guided.models import ModelFilesMissing, default_model_path

    try:
        path = default_model_path()
    except ModelFilesMissing:
        return None
    config = json.loads((path / "config.json").read_text())
    return str(path) if _head_dim(config) in VLLM_HEAD_DIMS else None


def vllm_test_model() -> str:
    """A model folder vLLM and Hugging Face both load (float32 weights, Llama-3 tokenizer)."""
    embedded = embedded_model_if_servable()
    if embedded is not None:
        return embedded
    # wide weights (initializer_range 0.5): next-token scores far apart, so greedy decoding does not
    # hinge on rounding differences between vLLM's kernels and Hugging Face's
    return random_llama3("tiny-random-llama3-hd32", hidden_size=64, intermediate_size=128, stop_on_every_eos=True,
                         initializer_range=0.5, torch_dtype="float32")
