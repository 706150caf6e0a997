"""Tool calling for ``guided serve`` with OpenAI's semantics: which constraint ``tools`` /
``tool_choice`` / ``parallel_tool_calls`` / ``strict`` select, how tools and calls appear in
the prompt, and how the output becomes ``message.tool_calls`` (whole, or as stream deltas).

The model writes a call as ``<tool_call>{"name": "NAME", "arguments": {...}}</tool_call>``,
and the constraint guarantees that form (a :class:`~guided.grammars.StructuralTag`, one tag
per function whose region is the function's ``parameters`` schema):

=========================  =====================================================================
``tool_choice``            output
=========================  =====================================================================
``"none"``                 text (or ``response_format``); no calls
``"auto"`` (default)       text, or text with calls (``response_format``, when given: that JSON
                           or only calls)
``"required"``             one or more calls, nothing else
``{"type": "function",     exactly one call of that function
"function": {"name": n}}``
=========================  =====================================================================

``parallel_tool_calls: false`` allows at most one call.  ``strict: true`` functions must follow
OpenAI's strict-mode rules (every object ``additionalProperties: false`` with every property
required; 400 otherwise) and their arguments are exact; other functions' schemas are compiled
with ``strict=False`` (keywords that cannot be enforced are relaxed) and fall back to "any JSON
object" when they cannot be compiled, which is OpenAI's "best effort" for non-strict tools.
The finish reason is ``tool_calls`` when calls were made (``stop`` when ``tool_choice`` names
the function, as OpenAI answers).  Arguments are compact JSON (OpenAI's own argument strings
are; the ``guided_whitespace`` extra picks ``bounded`` or ``flexible`` instead).

    >>> plan = ToolPlan.from_request(req)              # None when the request has no tools
    >>> constraint = plan.constraint(response_format_constraint)
    >>> reader = ToolCallReader(); events = reader.feed(text) + reader.finish()
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from guided.constraint import Constraint
from guided.serve.protocol import APIError

__all__ = ["ToolPlan", "ToolCallReader", "TRIGGER", "render_tools", "strict_schema_problem"]

TRIGGER = "<tool_call>"
CALL_END = "}</tool_call>"
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def call_begin(name: str) -> str:
    return f'{TRIGGER}{{"name": {json.dumps(name)}, "arguments": '


@dataclass(frozen=True)
class Function:
    name: str
    parameters: dict
    strict: bool
    description: str | None = None


@dataclass
class ToolPlan:
    """What a request's tools ask for (validated; 400 on anything OpenAI refuses)."""

    functions: list[Function]
    choice: str  # "none" | "auto" | "required" | "named"
    named: str | None = None
    parallel: bool = True
    whitespace: str = "compact"
    exclusive: bool = False  # "auto" with a response format: the output is that JSON or only calls

    def reader(self) -> "ToolCallReader":
        return ToolCallReader(self.calls_possible, calls_first=self.exclusive)

    @staticmethod
    def from_request(req) -> "ToolPlan | None":
        extra = req.model_extra or {}
        tools, choice = extra.get("tools"), extra.get("tool_choice")
        parallel = extra.get("parallel_tool_calls")
        if extra.get("functions") not in (None, []) or extra.get("function_call") is not None:
            raise APIError(400, "'functions' / 'function_call' are deprecated: use 'tools' / 'tool_choice'",
                           param="functions")
        if tools is None:
            if choice is not None:
                raise APIError(400, "'tool_choice' is only allowed when 'tools' are specified", param="tool_choice")
            if parallel is not None:
                raise APIError(400, "'parallel_tool_calls' is only allowed when 'tools' are specified",
                               param="parallel_tool_calls")
            return None
        if not isinstance(tools, list):
            raise APIError(400, "'tools' must be an array", param="tools")
        if parallel is not None and not isinstance(parallel, bool):
            raise APIError(400, "'parallel_tool_calls' must be a boolean", param="parallel_tool_calls")
        functions = [_function(t, i) for i, t in enumerate(tools)]
        names = [f.name for f in functions]
        if len(set(names)) != len(names):
            raise APIError(400, "tool function names must be unique", param="tools")
        named = None
        if choice is None:
            mode = "auto" if functions else "none"
        elif isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise APIError(400, f"Invalid value for 'tool_choice': {choice!r} (use 'none', 'auto', 'required' "
                               "or a named function)", param="tool_choice")
            mode = choice
        elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
            named = choice["function"].get("name")
            if named not in names:
                raise APIError(400, f"tool_choice names function {named!r}, which is not in 'tools'", param="tool_choice")
            mode = "named"
        else:
            raise APIError(400, "'tool_choice' must be 'none', 'auto', 'required' or "
                           '{"type": "function", "function": {"name": ...}}', param="tool_choice")
        if mode in ("auto", "required") and not functions:
            raise APIError(400, f"tool_choice {mode!r} needs at least one tool", param="tool_choice")
        # arguments are a string for programs to read: compact JSON unless the request asks otherwise
        ws = getattr(req, "guided_whitespace", None) or "compact"
        from guided.serve.protocol import ConstraintSpec

        exclusive = mode == "auto" and ConstraintSpec.from_request(req) is not None
        return ToolPlan(functions, mode, named, True if parallel is None else parallel, ws, exclusive)

    @property
    def calls_possible(self) -> bool:
        return self.choice != "none"

    def finish_reason(self, made_calls: bool, engine_reason: str) -> str:
        if engine_reason != "stop":
            return "length"
        if made_calls and self.choice != "named":
            return "tool_calls"
        return "stop"

    # -- the constraint ---------------------------------------------------------------------
    def key(self) -> dict:
        """What the constraint depends on (the compiled-constraint cache's content key)."""
        return {"functions": [(f.name, f.parameters, f.strict) for f in self.functions], "choice": self.choice,
                "named": self.named, "parallel": self.parallel, "whitespace": self.whitespace}

    def constraint(self, content: Constraint | None) -> Constraint | None:
        """The output constraint; ``content``: ``response_format``'s (``None``: free text)."""
        from guided.grammars import StructuralTag, Tag

        if self.choice == "none":
            return content
        funcs = [f for f in self.functions if self.choice != "named" or f.name == self.named]
        tags = [Tag(call_begin(f.name), self._arguments(f), CALL_END) for f in funcs]
        max_tags = 1 if (self.choice == "named" or not self.parallel) else None
        if self.choice in ("required", "named"):
            return StructuralTag(tags, text=False, min_tags=1, max_tags=max_tags)
        if content is None:
            return StructuralTag(tags, triggers=[TRIGGER], text=True, max_tags=max_tags)
        # auto with a response format: that JSON, or only calls
        return _either(content, StructuralTag(tags, text=False, min_tags=1, max_tags=max_tags))

    def _arguments(self, f: Function) -> Constraint:
        from guided.json_schema import JSONSchema

        if f.strict:  # a schema we cannot enforce exactly is a 400 (ConstraintError), as OpenAI refuses it
            return JSONSchema(f.parameters, whitespace=self.whitespace)
        try:
            return JSONSchema(f.parameters, strict=False, whitespace=self.whitespace)
        except ValueError:  # best effort: a schema we cannot compile still gets a JSON object
            return JSONSchema({"type": "object"}, whitespace=self.whitespace)

    def prompt_tools(self) -> list[dict]:
        """The tools as the chat template (or the plain transcript) shows them."""
        return [{"type": "function", "function": {"name": f.name, "description": f.description or "",
                                                  "parameters": f.parameters}} for f in self.functions]


def _either(a: Constraint, b: Constraint) -> Constraint:
    """A grammar whose sentences are ``a``'s or ``b``'s."""
    from guided.grammars import Grammar
    from guided.grammars.lark_loader import GrammarSpec, rename_spec
    from guided.grammars.structural_tag import spec_of

    terminals, rules, ignore, distinct, keep = [], [], [], [], []
    for i, part in enumerate((a, b)):
        renamed = rename_spec(spec_of(part), f"either{i}")
        terminals += renamed.terminals
        rules += renamed.rules + [("start", (renamed.start,))]
        ignore += renamed.ignore
        distinct += renamed.distinct
        keep += renamed.distinct_keep
    spec = GrammarSpec(tuple(terminals), tuple(rules), tuple(ignore), "start", (), None, tuple(distinct), tuple(keep))
    return Grammar.from_spec(spec, text="<response format or tool calls>")


def _function(tool: Any, i: int) -> Function:
    where = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise APIError(400, f"{where} must be {{'type': 'function', 'function': {{...}}}}", param=where)
    fn = tool["function"]
    name = fn.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise APIError(400, f"{where}.function.name must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'",
                       param=f"{where}.function.name")
    params = fn.get("parameters")
    if params is None:
        params = {"type": "object", "properties": {}, "additionalProperties": False}
    if not isinstance(params, dict):
        raise APIError(400, f"{where}.function.parameters must be a JSON Schema object",
                       param=f"{where}.function.parameters")
    strict = fn.get("strict")
    if strict not in (None, True, False):
        raise APIError(400, f"{where}.function.strict must be a boolean", param=f"{where}.function.strict")
    if strict:
        problem = strict_schema_problem(params)
        if problem:
            raise APIError(400, f"Invalid schema for function '{name}': {problem}",
                           param=f"{where}.function.parameters", code="invalid_function_parameters")
    description = fn.get("description")
    return Function(name, params, bool(strict), description if isinstance(description, str) else None)


def strict_schema_problem(schema: dict) -> str | None:
    """Why ``schema`` breaks OpenAI's strict-mode rules, or ``None``: the root is an object,
    and every object sets ``additionalProperties: false`` and lists every property as required."""
    if schema.get("type") != "object":
        return "the root schema must be of type 'object'"

    def walk(node: Any, path: str) -> str | None:
        if isinstance(node, list):
            for i, x in enumerate(node):
                found = walk(x, f"{path}/{i}")
                if found:
                    return found
            return None
        if not isinstance(node, dict):
            return None
        types = node.get("type")
        is_object = types == "object" or (isinstance(types, list) and "object" in types) or "properties" in node
        if is_object:
            if node.get("additionalProperties") is not False:
                return f"In context={path or '#'}, 'additionalProperties' is required to be supplied and to be false"
            props = node.get("properties") or {}
            missing = [k for k in props if k not in (node.get("required") or [])]
            if missing:
                return f"In context={path or '#'}, 'required' must list every property; missing {missing[0]!r}"
        for key in ("properties", "$defs", "definitions"):
            for k, v in (node.get(key) or {}).items() if isinstance(node.get(key), dict) else ():
                found = walk(v, f"{path}/{key}/{k}")
                if found:
                    return found
        for key in ("items", "anyOf", "allOf", "oneOf", "prefixItems"):
            if key in node:
                found = walk(node[key], f"{path}/{key}")
                if found:
                    return found
        return None

    return walk(schema, "")


def render_tools(tools: list[dict]) -> str:
    """The system text that shows tools and the call syntax (models without a chat template)."""
    lines = ["You may call these tools. To call one, write "
             f'{TRIGGER}{{"name": <name>, "arguments": <arguments as JSON>}}</tool_call>.']
    lines += [json.dumps(t["function"], ensure_ascii=False) for t in tools]
    return "\n".join(lines)


def render_call(call: dict) -> str:
    fn = call.get("function") or {}
    arguments = fn.get("arguments") or "{}"
    return f'{call_begin(str(fn.get("name", "")))}{arguments}{CALL_END}'


# ---------------------------------------------------------------------------------------------
# Reading calls out of the output (whole or streamed)
# ---------------------------------------------------------------------------------------------
class ToolCallReader:
    """Incremental reader of the constrained output: text, and calls as they are written.

    ``feed(text)`` returns events: ``("content", text)``, ``("call", index, id, name)`` when a
    call's name is known, ``("arguments", index, text)`` as its arguments grow.  Text that may
    still turn out to begin a call (a prefix of ``<tool_call>``) is held back until it is
    decided, so content deltas never contain a call.  Arguments are read with a JSON scanner
    (strings and nesting), so ``}</tool_call>`` inside a string argument is just text.

        >>> r = ToolCallReader()
        >>> r.feed('Hi <tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>')
        [('content', 'Hi '), ('call', 0, 'call_...', 'f'), ('arguments', 0, '{"a": 1}')]
    """

    def __init__(self, calls_possible: bool = True, calls_first: bool = False):
        self.calls_possible = calls_possible
        self.calls_first = calls_first  # calls only at the very start (else the whole output is content)
        self.buffer = ""
        self.mode = "text"  # text | head | args | tail
        self.calls: list[dict] = []
        self.content = ""
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> list[tuple]:
        if self.calls_possible and self.calls_first and not self.calls and self.mode == "text":
            start = self.buffer + text
            if not (TRIGGER.startswith(start[: len(TRIGGER)])):
                self.calls_possible, self.buffer, text = False, "", start  # content from the first byte on
        if not self.calls_possible:
            self.content += text
            return [("content", text)] if text else []
        self.buffer += text
        events: list[tuple] = []
        while True:
            before = (self.mode, len(self.buffer))
            getattr(self, f"_read_{self.mode}")(events)
            if (self.mode, len(self.buffer)) == before:
                return events

    def finish(self) -> list[tuple]:
        """The rest at the end of output (a held-back partial trigger is text after all)."""
        events: list[tuple] = []
        if self.mode == "text" and self.buffer:
            self._content(self.buffer, events)
            self.buffer = ""
        elif self.mode == "args" and self.buffer:  # cut short by the budget: partial arguments
            self._arguments(self.buffer, events)
            self.buffer = ""
        return events

    def _content(self, text: str, events: list) -> None:
        self.content += text
        events.append(("content", text))

    def _arguments(self, text: str, events: list) -> None:
        self.calls[-1]["function"]["arguments"] += text
        events.append(("arguments", len(self.calls) - 1, text))

    def _read_text(self, events: list) -> None:
        at = self.buffer.find(TRIGGER)
        if at >= 0:
            if at:
                self._content(self.buffer[:at], events)
            self.buffer = self.buffer[at + len(TRIGGER):]
            self.mode = "head"
            return
        keep = _partial_suffix(self.buffer, TRIGGER)
        if len(self.buffer) > keep:
            self._content(self.buffer[: len(self.buffer) - keep], events)
            self.buffer = self.buffer[len(self.buffer) - keep:]

    def _read_head(self, events: list) -> None:
        m = re.match(r'\{"name": ("(?:[^"\\]|\\.)*"), "arguments": ', self.buffer)
        if m is None:
            return
        name = json.loads(m.group(1))
        call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": name, "arguments": ""}}
        self.calls.append(call)
        events.append(("call", len(self.calls) - 1, call["id"], name))
        self.buffer = self.buffer[m.end():]
        self.mode = "args"
        self._depth, self._in_string, self._escaped = 0, False, False

    def _read_args(self, events: list) -> None:
        for i, ch in enumerate(self.buffer):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self._arguments(self.buffer[: i + 1], events)
                    self.buffer = self.buffer[i + 1:]
                    self.mode = "tail"
                    return
        if self.buffer:
            self._arguments(self.buffer, events)
            self.buffer = ""

    def _read_tail(self, events: list) -> None:
        if len(self.buffer) >= len(CALL_END) and self.buffer.startswith(CALL_END):
            self.buffer = self.buffer[len(CALL_END):]
            self.mode = "text"


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0
