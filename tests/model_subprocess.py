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


def test_model_path() -> str | None:
    """The model these tests run: ``GUIDED_TEST_MODEL`` if set; else the embedded model (``None``);
    else (a checkout without the trained model files) a tiny random-init Llama with the real
    Llama-3 tokenizer, built once into guided's cache."""
    if os.environ.get("GUIDED_TEST_MODEL"):
        return os.environ["GUIDED_TEST_MODEL"]
    from guided.models import ModelFilesMissing, default_model_path

    try:
        default_model_path()
        return None
    except ModelFilesMissing:
        pass
    import tempfile

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from guided.tokenizers import cache_dir, load_tokenizer

    path = cache_dir() / "test-models" / "tiny-random-llama3"
    if not (path / "model.safetensors").exists():
        tokenizer = load_tokenizer("llama3")
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             tie_word_embeddings=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent))
        LlamaForCausalLM(config).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(path)  # atomic: a concurrent run sees all files or none
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return str(path)


test_model_path.__test__ = False  # a helper, not a test
TEST_MODEL = test_model_path()
MODEL_ARGS = ["--model", TEST_MODEL] if TEST_MODEL else []
