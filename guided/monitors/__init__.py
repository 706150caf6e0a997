"""Monitors: a real language server, watching the generated code, restricts what comes next.

    >>> from guided.monitors import DereferenceMonitor, ArityMonitor, LanguageServerSession
    >>> session = LanguageServerSession(project_root, "pkg/main.py", prefix=code_before_cursor)
    >>> constraint = DereferenceMonitor(session) & ArityMonitor(session)   # one server, shared
    >>> guided.generate(model, tokenizer, code_before_cursor, constraint)

Each monitor is a :class:`~guided.constraint.Constraint`, so it composes with grammars (``&``)
and works with every sampler. See ``guided/monitors/base.py`` for how masks stay exact.
"""

from guided.monitors.base import Monitor, MonitorState
from guided.monitors.dereference import DereferenceMonitor
from guided.monitors.session import LanguageServerSession, MonitorError, ServerUnavailable, find_server_binary

__all__ = [
    "ArityMonitor",
    "DereferenceMonitor",
    "EnumCoverageMonitor",
    "LanguageServerSession",
    "Monitor",
    "MonitorError",
    "MonitorState",
    "ServerUnavailable",
    "find_server_binary",
]


def __getattr__(name: str):
    if name == "ArityMonitor":
        from guided.monitors.arity import ArityMonitor

        return ArityMonitor
    if name == "EnumCoverageMonitor":
        from guided.monitors.enum_coverage import EnumCoverageMonitor

        return EnumCoverageMonitor
    raise AttributeError(name)
