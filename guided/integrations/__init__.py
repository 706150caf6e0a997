"""Integrations with other engines: guided's constraints inside someone else's decoding loop.

    >>> from guided.integrations.huggingface import LogitsProcessor   # model.generate(...)

Each module imports its engine's library only when used, so the rest of guided works without it.
"""
