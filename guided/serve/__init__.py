"""Serving surfaces: the OpenAI-compatible HTTP server and the IDE completion backend.

    $ guided serve --port 8000          # http.py over protocol.py (requests) and engine.py (batching)
    $ guided ide                        # ide.py: LSP + fill-in-the-middle backend

Nothing is imported here, so ``import guided.serve.engine`` works without the web framework.
"""
