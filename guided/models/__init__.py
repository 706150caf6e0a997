"""guided's own small models, shipped in the package and loaded like any Hugging Face model.

    >>> from guided.models import load_default_model
    >>> model, tokenizer = load_default_model()          # LlamaForCausalLM, Llama-3 tokenizer
    >>> ids = tokenizer("def add(a, b):", return_tensors="pt").input_ids
    >>> out = model.generate(ids, max_new_tokens=20, do_sample=False)

    >>> from guided.models import load_diffusion_model
    >>> model, tokenizer = load_diffusion_model()        # ModernBertForMaskedLM, masked diffusion
    >>> model.config.mask_token_id == tokenizer.mask_token_id == 128002
    True

The folders hold nothing special: ``AutoModelForCausalLM.from_pretrained(default_model_path())``
and ``AutoTokenizer.from_pretrained(default_model_path())`` work without guided. How the models
were trained, and how to retrain them (``scripts/train.py``), is in ``MODELS.md``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "default_model_path",
    "diffusion_model_path",
    "load_default_model",
    "load_diffusion_model",
    "ModelFilesMissing",
]

_HERE = Path(__file__).resolve().parent


class ModelFilesMissing(FileNotFoundError):
    """A shipped model folder is absent (e.g. a source checkout without the trained files)."""


def _checked(path: Path) -> Path:
    if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
        raise ModelFilesMissing(
            f"{path}: no config.json/model.safetensors; train it with scripts/train.py (see MODELS.md)"
        )
    return path


def default_model_path() -> Path:
    """Folder of the embedded causal model (``LlamaForCausalLM``, Llama-3 tokenizer, 33 MB)."""
    return _checked(_HERE / "default")


def diffusion_model_path() -> Path:
    """Folder of the small masked-diffusion model (``ModernBertForMaskedLM``, Llama-3 tokenizer)."""
    return _checked(_HERE / "diffusion")


def _dtype(dtype):
    import torch

    return torch.float32 if dtype is None else dtype


def load_default_model(device: str = "cpu", dtype=None):
    """``(model, tokenizer)`` of the embedded causal model, in eval mode (float32 unless ``dtype``).

    The weights are stored in float16; float32 is the safe default on CPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_dtype(dtype)).to(device).eval()
    return model, tokenizer


def load_diffusion_model(device: str = "cpu", dtype=None):
    """``(model, tokenizer)`` of the masked-diffusion model; the mask id is ``model.config.mask_token_id``."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    path = diffusion_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForMaskedLM.from_pretrained(str(path), dtype=_dtype(dtype)).to(device).eval()
    return model, tokenizer
