"""What tests that start ``guided`` in a subprocess share: the model to run and the environment.

    >>> from model_subprocess import MODEL_ARGS, subprocess_env
    >>> subprocess.run([sys.executable, "-m", "guided.cli", "generate", *MODEL_ARGS, ...], env=subprocess_env())
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def subprocess_env() -> dict:
    """This environment with the checkout first on the path and Hugging Face kept offline."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def random_llama3(name: str, *, hidden_size: int = 32, intermediate_size: int = 64, stop_on_every_eos: bool = False,
                  **config) -> str:
    """A random-init 2-layer, 2-head Llama with the real Llama-3 tokenizer, built once into guided's
    cache as ``name`` (``config``: more ``LlamaConfig`` fields; ``stop_on_every_eos``: a generation
    config that stops on every id guided ends with, as vLLM reads it)."""
    import tempfile

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from guided.tokenizers import cache_dir, load_tokenizer
    from guided.vocab import Vocabulary

    path = cache_dir() / "test-models" / name
    if not (path / "model.safetensors").exists():
        tokenizer = load_tokenizer("llama3")
        torch.manual_seed(0)
        llama = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                            max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True, **config)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent))
        LlamaForCausalLM(llama).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if stop_on_every_eos:  # Llama-3's end of text and of turn
            eos = sorted(Vocabulary.from_tokenizer(tokenizer).eos_ids)
            GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
                             pad_token_id=tokenizer.eos_token_id).save_pretrained(staging)
        try:
            staging.rename(path)  # atomic: a concurrent run sees all files or none
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return str(path)


def test_model_path() -> str | None:
    """The model these tests run: ``GUIDED_TEST_MODEL`` if set; else the embedded model (``None``);
    else (a checkout without the trained model files) a tiny random-init Llama (:func:`random_llama3`)."""
    if os.environ.get("GUIDED_TEST_MODEL"):
        return os.environ["GUIDED_TEST_MODEL"]
    from guided.models import ModelFilesMissing, default_model_path

    try:
        default_model_path()
        return None
    except ModelFilesMissing:
        return random_llama3("tiny-random-llama3")


test_model_path.__test__ = False  # a helper, not a test
TEST_MODEL = test_model_path()
MODEL_ARGS = ["--model", TEST_MODEL] if TEST_MODEL else []
