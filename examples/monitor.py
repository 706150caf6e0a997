"""Monitor-guided decoding: a real language server keeps generated member names real.

    python examples/monitor.py

Completes `value = origin.` inside the small test project (tests/monitors/data/pyproj), where
`origin` is a `Point` defined in another module, with and without the dereference and arity
monitors, and prints both. Uses guided's default model when it is installed, else a tiny
random-weight Llama (the constraint still holds: only real members of `Point` come out).
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import guided  # noqa: E402
from guided.monitors import ArityMonitor, DereferenceMonitor, LanguageServerSession  # noqa: E402

PROJECT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "monitors" / "data" / "pyproj"


def load_model():
    try:
        return guided.load_default_model()
    except Exception as exc:  # noqa: BLE001 - the trained model may not be installed in a checkout
        print(f"(default model unavailable: {exc}; using a tiny random Llama)")
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = guided.load_tokenizer("llama3")
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=1024)
        return LlamaForCausalLM(config).eval(), tokenizer


def main() -> None:
    model, tokenizer = load_model()
    source = (PROJECT / "geometry" / "draw.py").read_text()
    prompt = source.split("\n\ndef paint")[0] + "\nvalue = origin."
    line = guided.Regex(r"[^\n]*\n")  # max_new_tokens bounds the length (a bounded repeat compiles slowly)
    plain = guided.generate(model, tokenizer, prompt, line, max_new_tokens=20, temperature=0.0)
    # One server for both monitors; it sees the whole project, the model only the prompt.
    with LanguageServerSession(PROJECT, "geometry/draw.py", prefix=prompt) as session:
        monitored = DereferenceMonitor(session) & ArityMonitor(session) & line
        guided_text = guided.generate(model, tokenizer, prompt, monitored, max_new_tokens=20, temperature=0.0)
        print("server stats:", session.stats)
    print(f"without monitors: value = origin.{plain.rstrip()}")
    print(f"with monitors:    value = origin.{guided_text.rstrip()}")


if __name__ == "__main__":
    main()
