"""What the pages say when a Docker engine does not answer: why, in a few plain words, and that the counts are
unknown rather than zero. Never the exception's own text: it names internal hosts, ports and sockets
(`HTTPConnectionPool(host='dood-proxy', port=2375): ... NewConnectionError(...)`). The caller logs that, for
whoever runs the api-server."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping

#: (what the exception text says, what the page says), first match wins: requests and urllib3 wrap the
#: socket's error in two or three layers, whose types differ between versions; their text does not.
_SAID = (
    (("timed out", "timeout"), "timed out"),
    (("connection refused", "errno 111"), "refused the connection"),
    (("no such file or directory", "errno 2]"), "its socket is not there"),
    (("permission denied", "errno 13"), "permission denied on its socket"),
    (
        ("name or service not known", "nodename nor servname", "temporary failure in name resolution"),
        "its host name is not known",
    ),
    (("no route to host", "network is unreachable"), "no network route to it"),
    (("certificate", "ssl", "tls"), "its TLS certificate was not accepted"),
    (("connection reset", "connection aborted", "remote end closed", "broken pipe"), "it closed the connection"),
)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (causes, contexts, and urllib3's `reason`), each once."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 16:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(w for w in wrapped if isinstance(w, BaseException))
    return seen


def why(exc: BaseException) -> str:
    """Why the engine did not answer, in words a data scientist reads: "timed out", "refused the
    connection", ... or "" when nothing known is recognised."""
    chain = _chain(exc)
    for error in chain:  # the socket's own error, when it is in the chain
        if isinstance(error, (TimeoutError, socket.timeout)):
            return "timed out"
        if isinstance(error, ConnectionRefusedError):
            return "refused the connection"
        if isinstance(error, FileNotFoundError):
            return "its socket is not there"
        if isinstance(error, PermissionError):
            return "permission denied on its socket"
        if isinstance(error, socket.gaierror):
            return "its host name is not known"
        if isinstance(error, ssl.SSLError):
            return "its TLS certificate was not accepted"
    status = next((getattr(getattr(e, "response", None), "status_code", None) for e in chain), None)
    if isinstance(status, int):
        return f"it answered with an error (HTTP {status})"
    text = " ".join(str(e) for e in chain).lower()
    for words, said in _SAID:
        if any(word in text for word in words):
            return said
    return ""


def did_not_answer(reason: str, *, several: bool = False) -> str:
    engine = "The Docker engines" if several else "The Docker engine"
    return f"{engine} did not answer ({reason})" if reason else f"{engine} did not answer"


class NoEngineAnswered(RuntimeError):
    """No Docker host answered the list call: `reasons` says why each did not (host name: `why`)."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        self.reasons = dict(reasons)
        said = (f"host {name or 'main'}: {reason or 'no answer'}" for name, reason in self.reasons.items())
        super().__init__("; ".join(said))


def counts_unknown(exc: BaseException) -> str:
    """The DooD page's line when nothing could be listed: the counts are unknown, and why."""
    if isinstance(exc, NoEngineAnswered) and len(exc.reasons) > 1:
        each = "; ".join(f"{name or 'main'}: {reason or 'no answer'}" for name, reason in exc.reasons.items())
        said = did_not_answer(each, several=True)
    elif isinstance(exc, NoEngineAnswered):
        said = did_not_answer(next(iter(exc.reasons.values()), ""))
    else:
        said = did_not_answer(why(exc))
    return f"{said}: the counts are unknown. The api-server's log has the details."


def host_not_counted(name: str, reason: str) -> str:
    """One host of several that did not answer: the page shows the others."""
    said = did_not_answer(reason)
    return f"host {name or 'main'}: {said[0].lower()}{said[1:]}: its containers are not counted"
