"""One language server watching one file of a real project, shared by every state of a generation.

Monitor states are immutable and carry only the generated text; the stateful part lives here:
the server process (started through multilspy with the *installed* server binary, never a
download), the open document and its version, and the answers already given. The document the
server sees is always ``prefix + context + suffix``, where ``context`` is the generated text up to
the position being asked about, so the server's view follows the generation (didChange).

    >>> with LanguageServerSession("/path/to/project", "pkg/main.py") as session:
    ...     session.completions("p.")            # ('norm', 'translate', 'x', 'y', ...) or None
    ...     session.signatures("p.translate(")   # signature-help answer (raw LSP dict) or None
    ...     session.retarget(new_prefix, new_suffix)  # the next cursor (an editor): same server

Every answer is *memoised per context* (the generated text before the cursor, which also fixes
the position) and final for the session: if the server is slow (past ``wait_s``), crashed or
answers nonsense, the answer is ``None`` ("no constraint") and stays so, which keeps masks and
``advance`` consistent. A crashed server is restarted (``max_restarts``), after that the session
degrades to ``None`` answers with a warning. Requests have timeouts; nothing here can hang.
:meth:`LanguageServerSession.retarget` moves the session to a new cursor (new prefix/suffix, or
another file of the project) on the same warm server, with a fresh set of answers.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import hashlib
import logging
import os
import pathlib
import shutil
import sys
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LanguageServerSession",
    "MonitorError",
    "ServerUnavailable",
    "find_server_binary",
    "language_of",
]

log = logging.getLogger("guided.monitors")


class MonitorError(ValueError):
    """A monitor was set up wrongly (missing project, file outside the project, unknown language)."""


class ServerUnavailable(MonitorError):
    """No usable language-server executable for this language on this machine."""


_LANGUAGES = {".py": "python", ".pyi": "python", ".ts": "typescript", ".tsx": "typescript",
              ".js": "javascript", ".jsx": "javascript", ".mjs": "javascript", ".cjs": "javascript"}


def language_of(path: str) -> str:
    """The monitor language of a file, from its suffix ("python", "typescript" or "javascript")."""
    lang = _LANGUAGES.get(pathlib.PurePath(path).suffix)
    if lang is None:
        raise MonitorError(f"{path}: no language server for files of this type (know {sorted(_LANGUAGES)})")
    return lang


def find_server_binary(language: str) -> str:
    """The installed language-server executable for ``language``; raises :class:`ServerUnavailable`.

    Python: ``jedi-language-server`` next to the running interpreter, else on ``PATH``
    (``$GUIDED_JEDI_SERVER`` overrides). TypeScript/JavaScript: ``$GUIDED_TS_SERVER``, else the copy
    ``scripts/install_ts_server.sh`` puts in guided's cache, else ``typescript-language-server`` on ``PATH``.
    """
    if language == "python":
        override = os.environ.get("GUIDED_JEDI_SERVER")
        candidates = [override] if override else []
        candidates.append(os.path.join(os.path.dirname(sys.executable), "jedi-language-server"))
        candidates.append(shutil.which("jedi-language-server"))
        hint = "pip install jedi-language-server"
    elif language in ("typescript", "javascript"):
        from guided.tokenizers import cache_dir

        override = os.environ.get("GUIDED_TS_SERVER")
        candidates = [override] if override else []
        root = os.environ.get("GUIDED_TS_SERVER_DIR") or str(cache_dir() / "ts-server")
        candidates.append(os.path.join(root, "node_modules", ".bin", "typescript-language-server"))
        candidates.append(shutil.which("typescript-language-server"))
        hint = "bash scripts/install_ts_server.sh (needs node and npm)"
        if shutil.which("node") is None:
            raise ServerUnavailable(f"node is not installed; TypeScript monitors need it ({hint})")
    else:
        raise MonitorError(f"unknown monitor language {language!r}")
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ServerUnavailable(f"no language server for {language}: {hint}")


@dataclass(frozen=True)
class _Doc:
    """Where the generated text sits in the document the server sees."""

    uri: str
    prefix: str
    suffix: str
    prefix_line: int  # line of the cursor at the end of the prefix
    prefix_char: int  # its UTF-16 column
    prefix_bytes: bytes  # the prefix as UTF-8 (what monitors scan)

    @classmethod
    def at(cls, uri: str, prefix: str, suffix: str) -> "_Doc":
        line, char = _end_position(0, 0, prefix)
        return cls(uri, prefix, suffix, line, char, prefix.encode("utf-8"))


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _end_position(start_line: int, start_char: int, text: str) -> tuple[int, int]:
    """LSP position after ``text`` when it starts at (start_line, start_char)."""
    newlines = text.count("\n")
    if newlines == 0:
        return start_line, start_char + _utf16_len(text)
    return start_line + newlines, _utf16_len(text[text.rfind("\n") + 1 :])


def decode_context(context: bytes | str) -> str:
    """Generated bytes as text (an unfinished UTF-8 sequence at the end is dropped)."""
    if isinstance(context, str):
        return context
    return context.decode("utf-8", errors="ignore")


_SKIPPED = object()  # a prefetch dropped because a newer one came

_LIVE_SESSIONS: "weakref.WeakSet[LanguageServerSession]" = weakref.WeakSet()


@atexit.register
def _close_all_sessions() -> None:  # never leave a server process behind
    for session in list(_LIVE_SESSIONS):
        try:
            session.close()
        except Exception:  # pragma: no cover - best effort at exit
            pass


class LanguageServerSession:
    """A language server on ``project_root`` with ``file_path`` open; answers are cached per context.

    ``prefix`` is the document text before the generation point (default: the whole file as on
    disk, so generation appends at its end); ``suffix`` the text after it (default empty).
    ``wait_s`` bounds how long one decoding step waits for an answer; ``request_timeout_s`` how
    long a request may take at all (a prefetched request may run longer than one step's wait).
    """

    def __init__(
        self,
        project_root: str | os.PathLike,
        file_path: str | os.PathLike,
        *,
        prefix: str | None = None,
        suffix: str = "",
        language: str | None = None,
        server_binary: str | None = None,
        wait_s: float = 2.0,
        request_timeout_s: float = 10.0,
        start_timeout_s: float = 60.0,
        max_restarts: int = 1,
        first_request_wait_s: float = 30.0,
    ):
        from guided._extras import require_extra

        require_extra("monitors", "guided.monitors.LanguageServerSession")
        root = pathlib.Path(project_root).resolve()
        if not root.is_dir():
            raise MonitorError(f"{root}: project root is not a directory")
        path = pathlib.Path(file_path)
        abs_path = (path if path.is_absolute() else root / path).resolve()
        try:
            rel = abs_path.relative_to(root)
        except ValueError:
            raise MonitorError(f"{abs_path}: file is not inside the project {root}") from None
        self.project_root = str(root)
        self.relative_path = str(rel)
        self.language = language or language_of(str(rel))
        if prefix is None:
            if not abs_path.is_file():
                raise MonitorError(f"{abs_path}: no such file (pass prefix= for a new file)")
            prefix = abs_path.read_text(encoding="utf-8")
        self._doc = _Doc.at(abs_path.as_uri(), prefix, suffix)
        self._server_binary = server_binary
        self.wait_s = wait_s
        self.request_timeout_s = request_timeout_s
        self.start_timeout_s = start_timeout_s
        self.first_request_wait_s = first_request_wait_s
        self.max_restarts = max_restarts
        # state shared by all monitor states of this session
        self._answers: dict[tuple, Any] = {}  # (epoch, kind, context digest) -> final answer (or None)
        self._epoch = 0  # bumped by retarget: answers and requests of an older cursor are stale
        # after a retarget the server's text is stale: "" = resend the whole text with the next
        # request; a URI = close that document (the file changed) and open the current one
        self._resync: str | None = None
        self._pending: dict[tuple, concurrent.futures.Future] = {}
        self._lock = threading.RLock()
        # guards (_doc, _epoch, _resync) for the server thread, which must never wait on
        # _lock: start() and close() hold _lock while they wait for that thread
        self._doc_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lsp = None  # multilspy LanguageServer
        self._server_ctx = None
        self._io_lock: asyncio.Lock | None = None
        self._version = 0
        self._doc_tail: str | None = None  # text after the prefix that the server has now
        self._restarts = 0
        self._answered_once = False
        self._latest_prefetch = None
        self.degraded = False
        self.closed = False
        self.stats = {"requests": 0, "cache_hits": 0, "timeouts": 0, "errors": 0, "restarts": 0}
        _LIVE_SESSIONS.add(self)

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> "LanguageServerSession":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def prefix(self) -> str:
        return self._doc.prefix

    @property
    def prefix_bytes(self) -> bytes:
        return self._doc.prefix_bytes

    @property
    def suffix(self) -> str:
        return self._doc.suffix

    @property
    def document_path(self) -> str:
        """Absolute path of the open document (the file being generated into)."""
        return str(pathlib.Path(self.project_root) / self.relative_path)

    def retarget(self, prefix: str, suffix: str = "", file_path: str | os.PathLike | None = None) -> None:
        """Point the session at a new cursor: ``prefix``|``suffix`` around it (in ``file_path``, if given).

            >>> session.retarget(code_before_cursor, code_after_cursor)
            >>> state = DereferenceMonitor(session).start(vocab)   # monitors built from now on
            >>> session.retarget(other_prefix, file_path="pkg/other.py")   # another file, same server

        Keeps the server (warm: no restart, jedi's caches stay) and only forgets the answers, which
        belong to the old cursor; the server gets the new text with the next question. Returns at
        once. Monitor *states* made before the call must not be advanced after it (their text is
        relative to the old prefix); monitors (constraints) are fine: they read the new prefix.
        Another file must be in the same project and language (one server per language).
        """
        uri, rel = self._doc.uri, self.relative_path
        if file_path is not None:
            path = pathlib.Path(file_path)
            abs_path = (path if path.is_absolute() else pathlib.Path(self.project_root) / path).resolve()
            try:
                rel = str(abs_path.relative_to(self.project_root))
            except ValueError:
                raise MonitorError(f"{abs_path}: file is not inside the project {self.project_root}") from None
            if language_of(rel) != self.language and not (
                {language_of(rel), self.language} <= {"typescript", "javascript"}
            ):
                raise MonitorError(f"{rel}: not a {self.language} file (one server per language)")
            uri = abs_path.as_uri()
        with self._lock:
            if self.closed:
                raise MonitorError("session is closed")
            with self._doc_lock:
                old_uri = self._doc.uri
                self._doc = _Doc.at(uri, prefix, suffix)
                self._epoch += 1
                if uri != old_uri:
                    # close the old document unless an earlier retarget already scheduled that
                    self._resync = self._resync if self._resync else old_uri
                    self.relative_path = rel
                elif self._resync is None:
                    self._resync = ""
            self._answers.clear()
            self._pending.clear()  # in-flight requests of the old cursor finish unobserved
            self._latest_prefetch = None

    def start(self) -> None:
        """Start the server and open the file (idempotent; called lazily by the first question)."""
        with self._lock:
            if self.closed:
                raise MonitorError("session is closed")
            if self._lsp is not None or self.degraded:
                return
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="guided-monitor-lsp", daemon=True
                )
                self._thread.start()
            future = asyncio.run_coroutine_threadsafe(self._start_server(), self._loop)
            try:
                future.result(timeout=self.start_timeout_s + 5)
            except Exception as exc:  # noqa: BLE001 - any failure degrades, never raises mid-decoding
                future.cancel()
                self._degrade(f"could not start the {self.language} language server: {exc!r}")

    async def _start_server(self) -> None:
        from multilspy.language_server import LanguageServer
        from multilspy.multilspy_config import Language, MultilspyConfig
        from multilspy.multilspy_logger import MultilspyLogger

        binary = self._server_binary or find_server_binary(self.language)
        config = MultilspyConfig(
            code_language=Language(self.language), server_binary=binary, start_independent_lsp_process=True
        )
        logging.getLogger("multilspy").setLevel(logging.WARNING)
        lsp = LanguageServer.create(config, MultilspyLogger(), self.project_root)
        ctx = lsp.start_server()
        try:
            await asyncio.wait_for(ctx.__aenter__(), timeout=self.start_timeout_s)
        except BaseException:
            await _kill(lsp)
            raise
        self._lsp, self._server_ctx = lsp, ctx
        self._io_lock = asyncio.Lock()
        self._version = 0
        with self._doc_lock:
            doc = self._doc
            self._resync = None  # a fresh server has exactly this document open
        self._doc_tail = doc.suffix  # the server's text after the prefix
        lsp.server.notify.did_open_text_document(
            {"textDocument": {"uri": doc.uri, "languageId": self.language, "version": 0,
                              "text": doc.prefix + doc.suffix}}
        )

    def close(self) -> None:
        """Shut the server down (bounded: a server that ignores ``shutdown`` is killed)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            loop, thread = self._loop, self._thread
            if loop is None:
                return
            if self._lsp is not None:
                future = asyncio.run_coroutine_threadsafe(self._stop_server(), loop)
                try:
                    future.result(timeout=15)
                except Exception:  # noqa: BLE001
                    pass
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(timeout=5)
            if not loop.is_running():
                loop.close()
            self._loop = self._thread = None

    async def _stop_server(self) -> None:
        lsp, ctx = self._lsp, self._server_ctx
        self._lsp = self._server_ctx = None
        if lsp is None:
            return
        try:
            lsp.server.notify.did_close_text_document({"textDocument": {"uri": self._doc.uri}})
        except Exception:  # noqa: BLE001
            pass
        await _exit(lsp, ctx)

    def _degrade(self, why: str) -> None:
        if not self.degraded:
            warnings.warn(f"guided.monitors: {why}; the monitor imposes no constraint", RuntimeWarning, stacklevel=3)
            log.warning("%s; degrading to no constraint", why)
        self.degraded = True

    def is_alive(self) -> bool:
        lsp = self._lsp
        process = getattr(getattr(lsp, "server", None), "process", None)
        return process is not None and process.returncode is None

    def server_pid(self) -> int | None:
        """Process id of the running server (tests use it to simulate a crash)."""
        lsp = self._lsp
        process = getattr(getattr(lsp, "server", None), "process", None)
        return None if process is None else process.pid

    # -- questions ------------------------------------------------------------------------------
    def completions(self, context: bytes | str, wait_s: float | None = None) -> tuple[str, ...] | None:
        """Identifier labels the server completes right after ``context``; ``None`` = no constraint."""
        return self._answer("completion", context, wait_s)

    def completion_items(self, context: bytes | str, wait_s: float | None = None) -> tuple[tuple[str, int], ...] | None:
        """``(label, kind)`` pairs completed after ``context`` (kinds are LSP CompletionItemKind)."""
        return self._answer("completion_items", context, wait_s)

    def completion_items_in_prefix(self, offset: int, wait_s: float | None = None) -> tuple[tuple[str, int], ...] | None:
        """``(label, kind)`` pairs completed at character ``offset`` of the prefix (text before generation)."""
        return self._answer("completion_items", f"\x00@{int(offset)}", wait_s)

    def signatures(self, context: bytes | str, wait_s: float | None = None) -> dict | None:
        """The raw ``textDocument/signatureHelp`` answer right after ``context`` (or ``None``)."""
        return self._answer("signature", context, wait_s)

    def definitions(self, context: bytes | str, wait_s: float | None = None) -> tuple[tuple[str, int], ...] | None:
        """``(path, line)`` (0-based line) of what the name that ends ``context`` is defined as."""
        return self._answer("definition", context, wait_s)

    def definitions_in_prefix(self, offset: int, wait_s: float | None = None) -> tuple[tuple[str, int], ...] | None:
        """:meth:`definitions` at character ``offset`` of the prefix (text before generation)."""
        return self._answer("definition", f"\x00@{int(offset)}", wait_s)

    def prefetch(self, kind: str, context: bytes | str) -> None:
        """Ask now, answer later: the request runs while the model computes its next step.

        Only the latest prefetch is kept: one that has not reached the server when a newer one
        comes is dropped, so speculative questions never queue up in front of real ones.
        """
        key = self._key(kind, context)
        with self._lock:
            if key in self._answers or key in self._pending or self.degraded or self.closed:
                return
            self._latest_prefetch = key
            self._submit(key, kind, decode_context(context), prefetch=True)

    def has_answer(self, kind: str, context: bytes | str) -> bool:
        return self._key(kind, context) in self._answers

    def _key(self, kind: str, context: bytes | str) -> tuple:
        data = context.encode("utf-8") if isinstance(context, str) else bytes(context)
        base = "completion" if kind == "completion_items" else kind
        return (self._epoch, base, len(data), hashlib.blake2b(data, digest_size=16).digest())

    def _answer(self, kind: str, context: bytes | str, wait_s: float | None):
        key = self._key(kind, context)
        with self._lock:
            if key in self._answers:
                self.stats["cache_hits"] += 1
                return _project(kind, self._answers[key])
            if self.degraded or self.closed:
                self._answers[key] = None
                return None
            future = self._pending.get(key)
            if future is None:
                future = self._submit(key, kind, decode_context(context))
        wait = self.wait_s if wait_s is None else wait_s
        if not self._answered_once:  # the first answer includes the server's own warm-up
            wait = max(wait, self.first_request_wait_s)
        deadline = time.monotonic() + wait
        raw = None
        while True:
            try:
                raw = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except concurrent.futures.TimeoutError:
                self.stats["timeouts"] += 1
                log.warning("language server did not answer within %.2fs; no constraint here", wait)
                raw = None
            except Exception as exc:  # noqa: BLE001
                self.stats["errors"] += 1
                log.warning("language server request failed (%r); no constraint here", exc)
                raw = None
            if raw is not _SKIPPED:
                break
            with self._lock:  # a dropped prefetch: ask for real
                future = self._submit(key, kind, decode_context(context))
        with self._lock:
            self._answered_once = True
            if key[0] != self._epoch:  # retargeted meanwhile: the answer is for the old cursor
                return _project(kind, raw)
            self._pending.pop(key, None)
            if key not in self._answers:  # first decision is final (consistency of states)
                self._answers[key] = raw
            return _project(kind, self._answers[key])

    def _submit(self, key, kind: str, context: str, prefetch: bool = False) -> concurrent.futures.Future:
        if self._lsp is None:
            self.start()
        if self.degraded or self._loop is None:
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_result(None)
            return future
        base = "completion" if kind == "completion_items" else kind
        future = asyncio.run_coroutine_threadsafe(
            self._request(base, context, key if prefetch else None, key[0]), self._loop
        )
        self._pending[key] = future
        return future

    async def _request(self, kind: str, context: str, prefetch_key=None, epoch: int = 0):
        assert self._io_lock is not None
        async with self._io_lock:  # one (didChange, request) pair on the wire at a time
            if prefetch_key is not None and prefetch_key != self._latest_prefetch:
                return _SKIPPED
            if self.closed or epoch != self._epoch:  # closed, or asked about an old cursor
                return None
            for attempt in range(2):
                if not self.is_alive():
                    if not await self._restart():
                        return None
                process = self._lsp.server.process
                ask = asyncio.ensure_future(self._ask(kind, context, epoch))
                died = asyncio.ensure_future(process.wait())
                done, _ = await asyncio.wait(
                    {ask, died}, timeout=self.request_timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
                if ask in done:
                    try:
                        answer = ask.result()
                    except Exception as exc:  # noqa: BLE001 - an error answer, or a broken pipe
                        # a killed server can fail the request before its exit is reaped: tell
                        # the two apart, since only a death calls for a restart (or degrading)
                        await asyncio.wait({died}, timeout=0.5)
                        if died.done():
                            log.warning("the %s language server exited while answering", self.language)
                            continue
                        died.cancel()
                        log.info("language server error: %r", exc)
                        return None
                    died.cancel()
                    return answer
                ask.cancel()
                if died in done:
                    log.warning("the %s language server exited while answering", self.language)
                    continue  # restart it and ask once more
                died.cancel()
                self.stats["timeouts"] += 1
                log.warning("language server request timed out after %.1fs", self.request_timeout_s)
                await self._restart(force=True)  # hung: later questions go to a fresh server
                return None
            return None

    async def _restart(self, force: bool = False) -> bool:
        if self._restarts >= self.max_restarts:
            self._degrade(f"the {self.language} language server died and was restarted {self._restarts} times")
            old, old_ctx = self._lsp, self._server_ctx
            self._lsp = self._server_ctx = None
            if old is not None:
                await _exit(old, old_ctx)
            return False
        self._restarts += 1
        self.stats["restarts"] += 1
        log.warning("restarting the %s language server (%s)", self.language, "hung" if force else "crashed")
        old, old_ctx = self._lsp, self._server_ctx
        self._lsp = self._server_ctx = None
        if old is not None:
            await _exit(old, old_ctx)
        try:
            await self._start_server()
            return True
        except Exception as exc:  # noqa: BLE001
            self._degrade(f"restarting the {self.language} language server failed: {exc!r}")
            return False

    async def _ask(self, kind: str, context: str, epoch: int):
        lsp = self._lsp
        with self._doc_lock:
            if epoch != self._epoch:
                return None
            doc, resync = self._doc, self._resync
            self._resync = None
        self.stats["requests"] += 1
        new_tail = ("" if context.startswith("\x00@") else context) + doc.suffix
        self._version += 1
        if resync:  # retargeted to another file: close the old document, open this one
            lsp.server.notify.did_close_text_document({"textDocument": {"uri": resync}})
            lsp.server.notify.did_open_text_document(
                {"textDocument": {"uri": doc.uri, "languageId": self.language, "version": self._version,
                                  "text": doc.prefix + new_tail}}
            )
        else:
            if resync == "":  # a new cursor in the same file (retarget): the whole text
                change: dict = {"text": doc.prefix + new_tail}
            else:  # replace the generated region (everything after the prefix) with context + suffix
                old_tail = self._doc_tail or ""
                end_line, end_char = _end_position(doc.prefix_line, doc.prefix_char, old_tail)
                change = {
                    "range": {
                        "start": {"line": doc.prefix_line, "character": doc.prefix_char},
                        "end": {"line": end_line, "character": end_char},
                    },
                    "text": new_tail,
                }
            lsp.server.notify.did_change_text_document(
                {"textDocument": {"uri": doc.uri, "version": self._version}, "contentChanges": [change]}
            )
        self._doc_tail = new_tail
        if context.startswith("\x00@"):  # a position inside the prefix
            line, char = _end_position(0, 0, doc.prefix[: int(context[2:])])
        else:
            line, char = _end_position(doc.prefix_line, doc.prefix_char, context)
        params = {"textDocument": {"uri": doc.uri}, "position": {"line": line, "character": char}}
        if kind == "completion":
            params["context"] = {"triggerKind": 1}
            return _completion_items(await lsp.server.send.completion(params))
        if kind == "signature":
            return await lsp.server.send.signature_help(params)
        if kind == "definition":
            return _locations(await lsp.server.send.definition(params))
        raise MonitorError(f"unknown question {kind!r}")


def _completion_items(response) -> tuple[tuple[str, int], ...] | None:
    """(label, kind) of each completion, or ``None`` when the list is partial (not a constraint)."""
    if response is None:
        return ()
    if isinstance(response, dict):
        if response.get("isIncomplete"):
            return None
        items = response.get("items") or []
    else:
        items = response
    out = []
    for item in items:
        label = item.get("label")
        if isinstance(label, str):
            out.append((label, int(item.get("kind") or 0)))
    return tuple(out)


def _locations(response) -> tuple[tuple[str, int], ...]:
    """``(file path, 0-based line)`` of each location of a definition answer."""
    from urllib.parse import unquote, urlparse

    if response is None:
        return ()
    items = response if isinstance(response, list) else [response]
    out = []
    for item in items:
        uri = item.get("uri") or item.get("targetUri")
        rng = item.get("range") or item.get("targetSelectionRange") or {}
        if isinstance(uri, str) and uri.startswith("file:"):
            out.append((unquote(urlparse(uri).path), int(rng.get("start", {}).get("line", 0))))
    return tuple(out)


def _project(kind: str, answer):
    if answer is None:
        return None
    if kind == "completion":
        return tuple(dict.fromkeys(label for label, _ in answer))
    return answer


async def _exit(lsp, ctx) -> None:
    """Leave multilspy's server context (shutdown, exit) in bounded time, then make sure it is gone."""
    if ctx is not None:
        try:
            await asyncio.wait_for(ctx.__aexit__(None, None, None), timeout=5)
        except BaseException:  # noqa: BLE001 - hung or already dead: killed below
            pass
    await _kill(lsp)


async def _kill(lsp) -> None:
    """Stop multilspy's handler and make sure the process tree is gone (bounded time)."""
    handler = getattr(lsp, "server", None)
    if handler is None:
        return
    process = handler.process
    try:
        await asyncio.wait_for(handler.stop(), timeout=8)
    except BaseException:  # noqa: BLE001
        pass
    if process is not None and process.returncode is None:
        try:
            process.kill()
            await asyncio.wait_for(process.wait(), timeout=3)
        except BaseException:  # noqa: BLE001
            pass

