"""The ``guided`` command: generate, serve, bench, ide.

    $ guided generate --regex '[0-9]{1,4}' 'x = '
    $ guided generate --schema person.json --sampler smc --particles 8 'A person: '
    $ guided generate --grammar python 'def add(a, b):'
    $ guided serve --port 8000
    $ guided bench --json --samplers awrs,masking
    $ guided ide                        # language server on stdio, for editors

Every command uses the embedded model unless ``--model PATH`` names a Hugging Face folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from typing import Sequence

__all__ = ["main", "build_parser"]

_EXAMPLES_GENERATE = """\
examples:
  guided generate --regex '[0-9]{1,4}' 'x = '
  guided generate --schema person.json 'Describe a person as JSON: '
  guided generate --grammar my.lark --start expr 'An expression: '
  guided generate --grammar python --max-tokens 60 'def add(a, b):'
  guided generate --choice yes --choice no 'Is the sky blue? '
  guided generate --json --sampler smc --particles 16 --temperature 0.8 'Data: '
  echo 'x = ' | guided generate --regex '[0-9]+' -

The generated text goes to stdout; progress and notes go to stderr.
"""

_EXAMPLES_SERVE = """\
examples:
  guided serve                                   # http://127.0.0.1:8000/v1
  guided serve --model runs/target --port 9000 --max-batch 16

then, with the openai client:
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
  client.chat.completions.create(model="guided-default", messages=[...],
      response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {...}}})
  extra_body={"guided_regex": "..."} / {"guided_choice": [...]} / {"guided_grammar": "..."}
"""

_EXAMPLES_BENCH = """\
examples:
  guided bench --json                            # any JSON object, awrs vs masking
  guided bench --grammar python --prompt 'def f(x):' --samplers awrs,masking,smc --runs 5
  guided bench --schema person.json --json-out bench.json

Prints tokens/s, time per token, constraint checks per token and the constraint's share of
the time, one row per sampler ("none" is the same loop without a constraint).
"""

_EXAMPLES_IDE = """\
examples:
  guided ide                                     # LSP on stdio (configure your editor to run this)
  guided ide --fim-port 8012                     # also the fill-in-the-middle HTTP endpoint
  guided ide --fim-only --fim-port 8012          # only the HTTP endpoint

Neovim (0.7+):
  vim.lsp.start_client({name = "guided", cmd = {"guided", "ide"}, root_dir = vim.fn.getcwd()})
"""


# ---------------------------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=32, width=min(100, _terminal_width()))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", metavar="PATH", help="Hugging Face model folder (default: the embedded model)")
    g.add_argument("--tokenizer", metavar="NAME|PATH",
                   help="llama3, qwen3, cl100k, o200k or a tokenizer folder (default: the model's own)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def _add_constraint_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    g = p.add_argument_group("constraint (choose one; none means plain text)")
    x = g.add_mutually_exclusive_group(required=required)
    x.add_argument("--schema", metavar="FILE", help="JSON Schema file: output is a JSON value valid under it")
    x.add_argument("--regex", metavar="R", help="regular expression the whole output must match")
    x.add_argument("--grammar", metavar="FILE.lark|NAME",
                   help="Lark grammar file, or a shipped grammar: json, python, sql, arithmetic")
    x.add_argument("--json", action="store_true", help="any JSON object")
    x.add_argument("--choice", metavar="TEXT", action="append", help="one of these strings (repeat the option)")
    g.add_argument("--start", metavar="RULE", help="start rule of --grammar (default: 'start' or the shipped one)")
    g.add_argument("--whitespace", choices=("compact", "bounded", "flexible"), default="compact",
                   help="JSON (--schema, --json): no whitespace between tokens (default), one bounded run "
                        "per gap (newline + indentation), or any")


def _add_sampling_options(p: argparse.ArgumentParser, with_sampler: bool = True) -> None:
    g = p.add_argument_group("sampling")
    if with_sampler:
        g.add_argument("--sampler", choices=("awrs", "masking", "smc"), default="awrs",
                       help="awrs: exact, few checks (default); masking: full mask per token; "
                            "smc: sequential Monte Carlo over --particles")
        g.add_argument("--particles", type=_positive_int, default=8, metavar="N", help="SMC particles (default 8)")
    g.add_argument("--max-tokens", type=_positive_int, default=128, metavar="N",
                   help="most tokens to generate (default 128)")
    g.add_argument("--temperature", type=float, default=1.0, metavar="T", help="0 is greedy (default 1.0)")
    g.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling mass")
    g.add_argument("--top-k", type=_positive_int, default=None, metavar="K", help="keep the K likeliest tokens")
    g.add_argument("--seed", type=int, default=None, metavar="S", help="random seed (reproducible output)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from guided import __version__

    parser = argparse.ArgumentParser(
        prog="guided",
        description="Constrained decoding of language models: regex, grammars, JSON Schema; "
                    "exact samplers (AWRS, SMC); an OpenAI-compatible server; an IDE backend.",
        epilog="Run 'guided COMMAND --help' for the options of a command.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"guided {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = sub.add_parser("generate", help="generate text that satisfies a constraint",
                         description="Generate text after PROMPT that satisfies a constraint.",
                         epilog=_EXAMPLES_GENERATE, formatter_class=_Formatter)
    gen.add_argument("prompt", metavar="PROMPT", help="the prompt ('-' reads it from stdin)")
    _add_model_options(gen)
    _add_constraint_options(gen)
    _add_sampling_options(gen)
    gen.add_argument("--draft", metavar="PATH|NAME",
                     help="speculative decoding: a draft model folder (same tokenizer as --model), "
                          "or a drafter: prompt_lookup, recycling")
    gen.add_argument("--output", choices=("text", "json"), default="text",
                     help="text: just the output (default); json: output, weight, tokens, timings")
    gen.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bars on stderr (default: when stderr is a terminal)")
    gen.set_defaults(run=_cmd_generate)

    srv = sub.add_parser("serve", help="OpenAI-compatible HTTP server with constrained decoding",
                         description="Serve /v1/completions, /v1/chat/completions and /v1/models; "
                                     "constraints come from response_format or guided_json / guided_regex / "
                                     "guided_grammar / guided_choice.",
                         epilog=_EXAMPLES_SERVE, formatter_class=_Formatter)
    _add_model_options(srv)
    g = srv.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    g.add_argument("--model-name", metavar="NAME", help="the model's name in the API (default: from the folder)")
    g.add_argument("--max-batch", type=_positive_int, default=8, metavar="N", help="rows decoded together (default 8)")
    g.add_argument("--max-queue", type=_positive_int, default=256, metavar="N",
                   help="rows waiting before 503s (default 256)")
    g.add_argument("--max-body-kb", type=_positive_int, default=1024, metavar="KB",
                   help="largest request body (default 1024 KB)")
    g.add_argument("--cache-size", type=_positive_int, default=64, metavar="N",
                   help="compiled constraints kept (default 64)")
    g.add_argument("--max-tokens-limit", type=_positive_int, default=4096, metavar="N",
                   help="largest max_tokens a request may ask for (default 4096)")
    g.add_argument("--sampler", choices=("awrs", "masking", "smc"), default="awrs",
                   help="sampler when a request names none (default awrs)")
    g.add_argument("--api-key", metavar="KEY", default=os.environ.get("GUIDED_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (else 401); default: $GUIDED_API_KEY, or none")
    g.add_argument("--max-choices", type=_positive_int, default=16, metavar="N",
                   help="most choices (n x prompts) per request (default 16)")
    g.add_argument("--max-constraint-kb", type=_positive_int, default=256, metavar="KB",
                   help="largest schema / regex / grammar / tool list (default 256 KB)")
    g.add_argument("--max-compile-seconds", type=float, default=30.0, metavar="S",
                   help="longest constraint compilation before a 400 (default 30)")
    g.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    srv.set_defaults(run=_cmd_serve)

    bench = sub.add_parser("bench", help="measure constrained decoding speed per sampler",
                           description="Time constrained generation on the model, one row per sampler.",
                           epilog=_EXAMPLES_BENCH, formatter_class=_Formatter)
    _add_model_options(bench)
    _add_constraint_options(bench)
    _add_sampling_options(bench, with_sampler=False)
    bench.add_argument("--prompt", default="", help="prompt (default: empty)")
    bench.add_argument("--samplers", default="none,awrs,masking",
                       help="comma-separated: none, awrs, masking, smc (default none,awrs,masking)")
    bench.add_argument("--particles", type=_positive_int, default=4, metavar="N", help="SMC particles (default 4)")
    bench.add_argument("--runs", type=_positive_int, default=3, metavar="N", help="generations per sampler (default 3)")
    bench.add_argument("--json-out", metavar="FILE", help="also write the results as JSON")
    bench.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bars on stderr (default: when stderr is a terminal)")
    bench.set_defaults(run=_cmd_bench, max_tokens=64)

    ide = sub.add_parser("ide", help="code-completion backend for editors (LSP on stdio, FIM over HTTP)",
                         description="A language server offering model completions guided by the Python "
                                     "grammar and a jedi-language-server monitor.",
                         epilog=_EXAMPLES_IDE, formatter_class=_Formatter)
    _add_model_options(ide)
    g = ide.add_argument_group("completion")
    g.add_argument("--max-tokens", type=_positive_int, default=24, metavar="N",
                   help="most tokens per suggestion (default 24)")
    g.add_argument("--deadline-ms", type=_positive_int, default=3000, metavar="MS",
                   help="per-request deadline; the best suggestion so far is returned (default 3000)")
    g.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 is greedy (default)")
    g.add_argument("--no-monitor", action="store_true", help="no jedi-language-server monitor (grammar only)")
    g.add_argument("--monitor-start-wait-ms", type=int, default=1000, metavar="MS",
                   help="how long a request waits for its file's language server to start (default 1000)")
    g = ide.add_argument_group("transport")
    g.add_argument("--fim-port", type=int, default=None, metavar="PORT",
                   help="also serve the fill-in-the-middle HTTP endpoint (POST /infill) on 127.0.0.1:PORT")
    g.add_argument("--fim-only", action="store_true", help="serve only the HTTP endpoint, no LSP on stdio")
    g.add_argument("--log-level", default="warning", choices=("error", "warning", "info", "debug"),
                   help="logging on stderr (default warning)")
    ide.set_defaults(run=_cmd_ide)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``guided`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _UserError as exc:
        print(f"guided {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        from guided._extras import MissingExtraError

        if not isinstance(exc, MissingExtraError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


class _UserError(Exception):
    """A problem with the command line or its files: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------
def _show_progress(args) -> bool:
    flag = getattr(args, "progress", None)
    return sys.stderr.isatty() if flag is None else bool(flag)


@contextmanager
def _status(message: str, show: bool):
    """A spinner on stderr while slow work (loading, compiling) runs."""
    if not show:
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield


def _load(args, show: bool):
    from guided.serve.engine import load_model

    where = args.model or "the embedded model"
    if not show:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    with _status(f"loading {where} ...", show):
        try:
            return load_model(args.model, args.tokenizer, args.device)
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise _UserError(str(exc)) from None


def _constraint_from_args(args):
    """The constraint the options select (``None``: plain text); bad input is a _UserError."""
    from guided.constraint import ConstraintError

    try:
        if args.schema:
            from guided.json_schema import JSONSchema

            try:
                with open(args.schema, encoding="utf-8") as f:
                    schema = json.load(f)
            except OSError as exc:
                raise _UserError(f"--schema: {exc}") from None
            except json.JSONDecodeError as exc:
                raise _UserError(f"--schema {args.schema}: not valid JSON: {exc}") from None
            return JSONSchema(schema, whitespace=args.whitespace)
        if args.regex is not None:
            from guided.grammars import Regex

            return Regex(args.regex)
        if args.grammar:
            from guided.grammars import SHIPPED_GRAMMARS, Grammar, load_grammar

            if not os.path.exists(args.grammar) and args.grammar in SHIPPED_GRAMMARS:
                return load_grammar(args.grammar, args.start)
            try:
                with open(args.grammar, encoding="utf-8") as f:
                    text = f.read()
            except OSError as exc:
                shipped = ", ".join(sorted(SHIPPED_GRAMMARS))
                raise _UserError(f"--grammar: {exc} (shipped grammars: {shipped})") from None
            from guided.serve.protocol import _start_rule

            return Grammar(text, start=args.start or _start_rule(text), source=args.grammar,
                           import_paths=[os.path.dirname(os.path.abspath(args.grammar))])
        if args.json:
            from guided.json_schema import JSONSchema

            return JSONSchema({"type": "object"}, whitespace=args.whitespace)
        if args.choice:
            from guided.grammars import Regex
            from guided.serve.protocol import _literal_regex

            return Regex("|".join(_literal_regex(c) for c in args.choice))
    except ConstraintError as exc:
        raise _UserError(f"invalid constraint: {exc}") from None
    return None


def _compile(constraint, tokenizer, show: bool):
    from guided.constraint import ConstraintError
    from guided.serve.engine import AnyText
    from guided.vocab import Vocabulary

    constraint = constraint if constraint is not None else AnyText()
    with _status("compiling the constraint ...", show):
        try:
            constraint.start(Vocabulary.from_tokenizer(tokenizer))
        except ConstraintError as exc:
            raise _UserError(f"invalid constraint: {exc}") from None
    return constraint


class _ProgressModel:
    """Wraps a model so that every decoding step ticks a progress bar (``start_batch`` hook)."""

    def __init__(self, model, bar):
        self._model = model
        self._bar = bar

    def __getattr__(self, name):
        return getattr(self._model, name)

    def start_batch(self, prompt_ids, pad_id):
        from guided.samplers.lm import start_batch

        return _ProgressBatch(start_batch(self._model, prompt_ids, pad_id), self._bar)


class _ProgressBatch:
    def __init__(self, inner, bar):
        self._inner = inner
        self._bar = bar

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def append(self, tokens):
        out = self._inner.append(tokens)
        self._bar.update(1)
        return out

    def extend(self, tokens):
        out = self._inner.extend(tokens)
        self._bar.update(int(tokens.shape[1]))
        return out


def _generate_kwargs(args) -> dict:
    return {"max_new_tokens": args.max_tokens, "temperature": args.temperature,
            "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed}


def _sampler(name: str, particles: int):
    from guided.serve.engine import make_sampler

    return make_sampler(name, particles)


def _check_sampling(args) -> None:
    if args.temperature < 0:
        raise _UserError("--temperature must be >= 0")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise _UserError("--top-p must be in (0, 1]")


# ---------------------------------------------------------------------------------------------
# guided generate
# ---------------------------------------------------------------------------------------------
def _cmd_generate(args) -> int:
    _check_sampling(args)
    if args.sampler == "smc" and args.temperature == 0:
        raise _UserError("--sampler smc draws samples: use --temperature > 0")
    show = _show_progress(args)
    constraint = _constraint_from_args(args)  # bad input fails here, before the slow imports
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt

    from tqdm import tqdm

    import guided
    from guided.samplers import DeadEndError
    model, tokenizer, _ = _load(args, show)
    constraint = _compile(constraint, tokenizer, show)
    kwargs = _generate_kwargs(args)
    sampler = _sampler(args.sampler, args.particles)
    generate = guided.generate
    if args.draft:
        from guided.speculative import generate_speculative

        generate = generate_speculative
        if os.path.isdir(args.draft):
            draft, draft_tok, _ = _load(argparse.Namespace(model=args.draft, tokenizer=args.tokenizer,
                                                           device=args.device), show)
            if draft_tok.get_vocab() != tokenizer.get_vocab():
                raise _UserError("--draft: the draft model's tokenizer differs from the model's")
            kwargs["draft"] = draft
        else:
            kwargs["draft"] = args.draft  # a drafter name: prompt_lookup, recycling, forced
    t0 = time.perf_counter()
    with tqdm(total=args.max_tokens, desc="generating", unit="tok", disable=not show, leave=False,
              file=sys.stderr) as bar:
        try:
            out = generate(_ProgressModel(model, bar) if not args.draft else model, tokenizer, prompt, constraint,
                           sampler=sampler, return_details=True, **kwargs)
        except DeadEndError as exc:
            print(f"guided generate: the constraint could not be completed: {exc}", file=sys.stderr)
            return 1
        except (ValueError, TypeError) as exc:
            if args.draft:
                raise _UserError(f"--draft: {exc}") from None
            raise
    seconds = time.perf_counter() - t0
    text, finished = out.texts[0], bool(out.finished[0])
    if args.output == "json":
        record = {"text": text, "finished": finished, "log_weight": float(out.log_weights[0]),
                  "tokens": len(out.token_ids[0]), "seconds": round(seconds, 4), "sampler": args.sampler}
        stats = getattr(out, "draft_stats", None)
        if stats is not None:
            record["draft"] = {"acceptance_rate": stats.acceptance_rate,
                               "mean_accepted_length": stats.mean_accepted_length}
        print(json.dumps(record, ensure_ascii=False))
    else:
        print(text)
    if not finished:
        print(f"guided generate: note: stopped at --max-tokens {args.max_tokens} before the constraint "
              "was complete (the output is a valid prefix)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# guided serve
# ---------------------------------------------------------------------------------------------
def _cmd_serve(args) -> int:
    from guided.serve.http import ServerConfig, serve
    from guided.serve.engine import Engine

    show = sys.stderr.isatty()
    model, tokenizer, name = _load(args, show)
    engine = Engine(model, tokenizer, name=args.model_name or name)
    config = ServerConfig(max_batch=args.max_batch, max_queue=args.max_queue, max_body_bytes=args.max_body_kb * 1024,
                          cache_size=args.cache_size, max_tokens_limit=args.max_tokens_limit,
                          default_sampler=args.sampler, api_key=args.api_key, max_choices=args.max_choices,
                          max_constraint_bytes=args.max_constraint_kb * 1024,
                          max_compile_seconds=args.max_compile_seconds)

    def ready(url: str) -> None:
        print(f"guided serve: model '{engine.name}' at {url}/v1 (Ctrl-C stops)", file=sys.stderr, flush=True)

    serve(engine, host=args.host, port=args.port, config=config, log_level=args.log_level, ready=ready)
    return 0


# ---------------------------------------------------------------------------------------------
# guided bench
# ---------------------------------------------------------------------------------------------
def _cmd_bench(args) -> int:
    from tqdm import tqdm

    import guided
    from guided.samplers import DeadEndError
    from guided.serve.engine import AnyText
    from guided.vocab import Vocabulary

    _check_sampling(args)
    names = [n.strip() for n in args.samplers.split(",") if n.strip()]
    for n in names:
        if n not in ("none", "awrs", "masking", "smc"):
            raise _UserError(f"--samplers: unknown sampler {n!r} (none, awrs, masking, smc)")
    show = _show_progress(args)
    constraint = _constraint_from_args(args)
    model, tokenizer, model_name = _load(args, show)
    t0 = time.perf_counter()
    constraint = _compile(constraint, tokenizer, show)
    compile_seconds = time.perf_counter() - t0
    vocab = Vocabulary.from_tokenizer(tokenizer)
    rows = []
    with tqdm(total=len(names) * args.runs, desc="bench", unit="run", disable=not show, file=sys.stderr,
              leave=False) as bar:
        for name in names:
            sampler = _sampler("masking" if name == "none" else name, args.particles)
            target = AnyText() if name == "none" else constraint
            tokens = seconds = constraint_s = forward_s = checks = finished = 0.0
            for run in range(args.runs):
                kwargs = _generate_kwargs(args)
                kwargs["seed"] = (args.seed or 0) + run
                if name == "smc" and kwargs["temperature"] == 0:
                    kwargs["temperature"] = 1.0
                try:
                    out = guided.generate(model, tokenizer, args.prompt or "", target, sampler=sampler,
                                          return_details=True, **kwargs)
                except DeadEndError as exc:
                    raise _UserError(f"{name}: the constraint could not be completed: {exc}") from None
                s = out.stats
                n_tok = sum(len(t) for t in out.token_ids)
                tokens += n_tok
                seconds += s.total_seconds
                constraint_s += s.constraint_seconds
                forward_s += s.forward_seconds
                checks += s.checks + s.masks * vocab.size
                finished += sum(out.finished)
                bar.update(1)
            rows.append({
                "sampler": name, "runs": args.runs, "tokens": int(tokens),
                "tokens_per_s": tokens / seconds if seconds else 0.0,
                "ms_per_token": 1000 * seconds / max(tokens, 1),
                "checks_per_token": checks / max(tokens, 1),
                "constraint_share": constraint_s / seconds if seconds else 0.0,
                "forward_share": forward_s / seconds if seconds else 0.0,
                "finished": int(finished),
            })
    _print_bench(rows, model_name, compile_seconds)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump({"model": model_name, "compile_seconds": compile_seconds, "max_tokens": args.max_tokens,
                       "temperature": args.temperature, "rows": rows}, f, indent=2)
    return 0


def _print_bench(rows: list[dict], model_name: str, compile_seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"guided bench: {model_name} (constraint compiled in {compile_seconds:.2f}s)")
    for col in ("sampler", "tokens", "tok/s", "ms/tok", "checks/tok", "constraint %", "forward %", "finished"):
        table.add_column(col, justify="left" if col == "sampler" else "right")
    for r in rows:
        table.add_row(r["sampler"], str(r["tokens"]), f"{r['tokens_per_s']:.1f}", f"{r['ms_per_token']:.1f}",
                      f"{r['checks_per_token']:.0f}", f"{100 * r['constraint_share']:.0f}",
                      f"{100 * r['forward_share']:.0f}", f"{r['finished']}/{r['runs']}")
    Console(width=max(100, _terminal_width())).print(table)


# ---------------------------------------------------------------------------------------------
# guided ide
# ---------------------------------------------------------------------------------------------
def _cmd_ide(args) -> int:
    from guided.serve.ide import IDEConfig, run_ide

    config = IDEConfig(max_tokens=args.max_tokens, deadline_s=args.deadline_ms / 1000,
                       temperature=args.temperature, monitor=not args.no_monitor,
                       monitor_start_wait_s=args.monitor_start_wait_ms / 1000)
    if args.fim_only and args.fim_port is None:
        raise _UserError("--fim-only needs --fim-port")
    return run_ide(model_path=args.model, tokenizer=args.tokenizer, device=args.device, config=config,
                   fim_port=args.fim_port, lsp=not args.fim_only, log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
