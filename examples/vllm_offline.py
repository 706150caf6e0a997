"""guided's constraints in vLLM's offline ``LLM`` (a JSON Schema, a regex, a choice, a shipped grammar),
and SMC with vLLM as the language model (the particles' next-token distributions come from vLLM).

    python examples/vllm_offline.py [MODEL_FOLDER]        (in the vLLM venv: ./dev vllm-python ...)

Prints one JSON line per request (the constraint, the text, whether it finished, the token ids),
then one for SMC (the posterior over texts and log Z).
vLLM starts worker processes, hence the ``__main__`` guard.
"""

import json
import sys

SMC_PROMPT, SMC_REGEX, SMC_PARTICLES = "The answer is ", "[0-9]{2}", 16
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
REQUESTS = [
    ("json", "A person as JSON: ", {"guided_json": SCHEMA}),
    ("regex", "A date: ", {"guided_regex": r"20[0-9]{2}-[01][0-9]-[0-3][0-9]"}),
    ("choice", "The answer is ", {"guided_choice": ["yes", "no", "maybe"], "guided_sampler": "awrs"}),
    ("grammar", "A JSON value: ", {"guided_grammar_name": "json"}),
]


def main(model: str) -> None:
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    import guided
    from guided.integrations.vllm import GuidedLogitsProcessor, VLLMModel

    # max_logprobs=-1: SMC reads whole next-token distributions; the prefix cache shares particles' prefixes
    llm = LLM(model=model, logits_processors=[GuidedLogitsProcessor], dtype="float32", max_model_len=512,
              kv_cache_memory_bytes=1 << 28, enforce_eager=True, max_logprobs=-1, enable_prefix_caching=True)
    params = [SamplingParams(max_tokens=48, temperature=0.8, seed=i, extra_args=args)
              for i, (_, _, args) in enumerate(REQUESTS)]
    outputs = llm.generate([prompt for _, prompt, _ in REQUESTS], params)
    for (name, _, args), out in zip(REQUESTS, outputs):
        o = out.outputs[0]
        print(json.dumps({"constraint": name, "args": args, "text": o.text, "finished": o.finish_reason == "stop",
                          "token_ids": list(o.token_ids)}))
    tokenizer = AutoTokenizer.from_pretrained(model)
    result = guided.smc(VLLMModel(llm), tokenizer, SMC_PROMPT, guided.Regex(SMC_REGEX), n_particles=SMC_PARTICLES,
                        seed=0, max_new_tokens=8)
    print(json.dumps({"smc": result.posterior(), "log_z": result.log_z}))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        from guided.models import default_model_path

        main(str(default_model_path()))
