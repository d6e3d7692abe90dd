"""HTTP to whichever master answers: the one copy of raftkube's failover rules.

Every master serves every request, so a request goes to the servers in turn, the one
that answered last first:

- A connection that could not be made (refused, unreachable, connect timeout) moves on to
  the next server at once: nothing was sent.
- A `503` moves on as well: a master answers it only for a request it did not apply
  (it knows no leader, or cannot serve right now).
- A request that was sent and got no answer (a read timeout, a dropped connection), or
  that got a `504` ("the write may still be applied", Kubernetes' `Timeout`), moves on
  only when it is idempotent (reads, watches). A write is never sent twice: its outcome
  is unknown, and the caller hears so (`UnknownOutcome`), because a second copy could
  apply twice or answer AlreadyExists for its own first copy.
- Any other answer is final and returned to the caller, which decodes it (`rest` into a
  Kubernetes `Status`, `etcd` into grpc-gateway's error); only a `401` is raised here.

When a whole round finds no server, the client waits a little and tries again, until
`wait` seconds have passed since the request began: an election (a fraction of a second
here) or a master restart is waited out rather than reported. Then `NoServer` names every
server of the last round and why it did not answer (`connection refused`...).

This is the package's only aiohttp module.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from raftkube.client.errors import ClientError, NoServer, Unauthorized, UnknownOutcome

TERM_HEADER = "X-Raftkube-Term"
MAX_LINE = 16 * 1024 * 1024  # a watch line holds one object (1.5 MB at most) and framing
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Answer:
    """A server's final answer to one request."""

    status: int
    body: bytes
    server: str
    warnings: tuple[str, ...] = ()

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body.strip() else {}
        except ValueError:
            raise ClientError(f"{self.server} answered with something that is not "
                              "JSON") from None


class ErrorAnswer(ClientError):
    """A stream could not be opened: the server's final answer, for the caller to decode."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(f"HTTP {answer.status} from {answer.server}")
        self.answer = answer


class StreamBroken(ClientError):
    """An open stream ended abnormally: a dropped connection or a read that timed out."""


WebSocket = aiohttp.ClientWebSocketResponse  # an open exec stream, for the layers above


class _TryNext(Exception):
    """This server cannot answer now; nothing was applied there."""


@dataclass
class Stream:
    """An open streaming answer (a watch): newline-delimited lines until it ends."""

    server: str
    _response: aiohttp.ClientResponse
    _buffer: bytearray = field(default_factory=bytearray)

    async def lines(self) -> AsyncIterator[bytes]:
        """Each complete line; ends when the server ends the stream. A read that times
        out or a dropped connection raises `StreamBroken`."""
        try:
            async for line in self._lines():
                yield line
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StreamBroken(f"{self.server}: the stream broke ({_reason(e)})") from None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (logs), until the server ends it."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StreamBroken(f"{self.server}: the stream broke ({_reason(e)})") from None

    async def _lines(self) -> AsyncIterator[bytes]:
        content = self._response.content
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[:newline + 1]
                if line.strip():
                    yield line
                continue
            if len(self._buffer) > MAX_LINE:
                raise ClientError(f"{self.server} sent a line over {MAX_LINE} bytes")
            chunk = await content.readany()
            if not chunk:
                return
            self._buffer += chunk


def _warning_text(header: str) -> str:
    """`299 - "unknown field \\"x\\""` → `unknown field "x"` (RFC 7234's warn-value)."""
    code, _, rest = header.partition(" - ")
    try:
        text = json.loads(rest)
    except ValueError:
        return header
    return text if isinstance(text, str) and code.strip().isdigit() else header


def is_json(answer: Answer) -> bool:
    try:
        json.loads(answer.body)
    except ValueError:
        return False
    return True


class Transport:
    """Requests to the first server that answers; one per process (or per client).

    Every request carries `token`, unless its headers bring their own `Authorization`:
    the hollow nodes of one agent process share one transport (one connection pool, one
    view of which master answers) and each speaks with its own node token.
    """

    def __init__(self, servers: list[str], token: str, *, ca: str | None = None,
                 pinned: bool = False, timeout: float = 15.0, wait: float = 10.0,
                 connect_timeout: float = 2.0) -> None:
        if not servers:
            raise ClientError("no servers to talk to")
        self.servers = [s.rstrip("/") for s in servers]
        self.token = token
        self.ca = ca
        self.pinned = pinned
        self._tls = tls_context(ca, pinned=pinned)
        self.timeout = timeout
        self.wait = wait
        self.connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self.token}"},
                # Watches hold a connection each; requests share the rest.
                connector=aiohttp.TCPConnector(limit=1024, keepalive_timeout=10,
                                               ssl=self._tls, enable_cleanup_closed=True),
                auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            # TLS connections are aborted, not shut down: Python before 3.12.8 can leave
            # a socket of a TLS shutdown behind (aiohttp's enable_cleanup_closed too).
            if self._session.connector is not None:
                await self._session.connector.close(abort_ssl=True)
            await self._session.close()
            self._session = None

    def _prefer(self, server: str) -> None:
        if self.servers[0] != server:
            self.servers.remove(server)
            self.servers.insert(0, server)

    async def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                      body: bytes | None = None, headers: Mapping[str, str] | None = None,
                      timeout: float | None = None, idempotent: bool | None = None,
                      wait: float | None = None, unavailable_is_unknown: bool = False,
                      ours: Callable[[Answer], bool] = is_json) -> Answer:
        """One request, answered by the first server that can. See the module's rules.
        `unavailable_is_unknown`: a 503 to a write means its outcome is unknown (etcd's
        gateway answers a commit that timed out with 503, where REST answers 504).
        `ours`: whether an error answer came from an API server (else something else
        listens on that address, and the next server is tried)."""
        answers: list[Answer] = []
        safe = method in IDEMPOTENT if idempotent is None else idempotent
        unknown = frozenset({503, 504}) if unavailable_is_unknown else frozenset({504})

        async def attempt(server: str) -> None:
            answer = await self._once(server, method, path, query, body, headers, timeout,
                                      safe)
            answers.append(self._judge(answer, method, path, safe, unknown, ours))

        await self._rounds(attempt, method, path, wait)
        return answers[0]

    @asynccontextmanager
    async def stream(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                     body: bytes | None = None, read_timeout: float | None = 30.0,
                     wait: float | None = None, headers: Mapping[str, str] | None = None,
                     ours: Callable[[Answer], bool] = is_json) -> AsyncIterator[Stream]:
        """A streaming request (a watch), idempotent: opened on the first server that
        answers 200; any other final answer raises `ErrorAnswer`."""
        opened: list[aiohttp.ClientResponse] = []

        async def attempt(server: str) -> None:
            opened.append(await self._open(server, method, path, query, body, headers,
                                           read_timeout, ours))

        await self._rounds(attempt, method, path, wait)
        response = opened[0]
        try:
            yield Stream(str(response.url.origin()), response)
        finally:
            response.release()
            response.close()

    @asynccontextmanager
    async def websocket(self, path: str, *, query: list[tuple[str, str]],
                        protocols: tuple[str, ...], headers: Mapping[str, str] | None = None,
                        wait: float | None = None
                        ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """A WebSocket (exec) on the first server that accepts the upgrade; an error
        answer raises `ErrorAnswer`. Nothing runs before the upgrade, so trying the next
        server is safe."""
        opened: list[aiohttp.ClientWebSocketResponse] = []

        async def attempt(server: str) -> None:
            url = server + path + "?" + urllib.parse.urlencode(query)
            try:
                opened.append(await self._http().ws_connect(
                    url, protocols=protocols, headers=headers, heartbeat=None,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0)))
            except aiohttp.WSServerHandshakeError as e:
                if e.status in (502, 503):
                    raise _TryNext(f"unavailable (HTTP {e.status})") from None
                # The refusal again as a plain GET, with the same query: the server
                # checks the request (pod, container, command) before the upgrade.
                full = path + "?" + urllib.parse.urlencode(query)
                answer = await self._once(server, "GET", full, None, None, headers, None,
                                          True) if e.status else None
                if answer is None:
                    raise _TryNext(f"no WebSocket ({_reason(e)})") from None
                raise ErrorAnswer(self._judge(answer, "GET", path, True, frozenset({504}),
                                              is_json)) from None
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                raise _TryNext(_unreachable(e)) from None
            except (aiohttp.ClientError, TimeoutError) as e:
                raise _TryNext(f"no answer ({_reason(e)})") from None

        await self._rounds(attempt, "GET", path, wait)
        ws = opened[0]
        try:
            yield ws
        finally:
            await ws.close()

    async def _rounds(self, attempt: Any, method: str, path: str,
                      wait: float | None) -> None:
        deadline = time.monotonic() + (self.wait if wait is None else wait)
        pause = 0.05
        while True:
            errors = []
            for server in list(self.servers):
                try:
                    await attempt(server)
                except _TryNext as e:
                    errors.append(f"{server} ({e})")
                    continue
                self._prefer(server)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoServer(f"no server answered {method} {path.split('?')[0]}: "
                               + ", ".join(errors))
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)

    def _url(self, server: str, path: str, query: Mapping[str, str] | None) -> str:
        return server + path + ("?" + urllib.parse.urlencode(query) if query else "")

    async def _once(self, server: str, method: str, path: str,
                    query: Mapping[str, str] | None, body: bytes | None,
                    headers: Mapping[str, str] | None, timeout: float | None,
                    safe: bool) -> Answer:
        limits = aiohttp.ClientTimeout(total=timeout or self.timeout,
                                       connect=self.connect_timeout)
        try:
            async with self._http().request(method, self._url(server, path, query), data=body,
                                            headers=headers, timeout=limits) as resp:
                raw = await resp.read()
                warnings = tuple(_warning_text(w) for w in resp.headers.getall("Warning", []))
                answer = Answer(resp.status, raw, server, warnings)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            raise _TryNext(_unreachable(e)) from None
        except (aiohttp.ClientError, TimeoutError) as e:
            if safe:
                raise _TryNext(f"no answer ({_reason(e)})") from None
            raise UnknownOutcome(
                f"{server} did not answer {method} {path.split('?')[0]} "
                f"({_reason(e)}); it may or may not have been applied") from None
        return answer

    @staticmethod
    def _judge(answer: Answer, method: str, path: str, safe: bool,
               unknown: frozenset[int], ours: Callable[[Answer], bool]) -> Answer:
        if answer.status == 401:
            raise Unauthorized
        if answer.status == 503 and 503 not in unknown:
            raise _TryNext(f"unavailable ({_snippet(answer)})")
        if answer.status in unknown:
            if safe:
                raise _TryNext(f"timed out ({_snippet(answer)})")
            raise UnknownOutcome(
                f"{answer.server} could not confirm {method} {path.split('?')[0]} in time "
                f"({_snippet(answer)}); it may or may not have been applied")
        if answer.status >= 400 and not ours(answer):
            # Not a raftkube answer: something else listens on that address.
            raise _TryNext(f"HTTP {answer.status} that is not an API server's answer")
        return answer

    async def _open(self, server: str, method: str, path: str,
                    query: Mapping[str, str] | None, body: bytes | None,
                    headers: Mapping[str, str] | None, read_timeout: float | None,
                    ours: Callable[[Answer], bool]) -> aiohttp.ClientResponse:
        limits = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                       sock_read=read_timeout)
        try:
            resp = await self._http().request(method, self._url(server, path, query),
                                              data=body, headers=headers, timeout=limits)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            raise _TryNext(_unreachable(e)) from None
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _TryNext(f"cannot open a stream ({_reason(e)})") from None
        if resp.status == 200:
            return resp
        try:
            raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _TryNext(f"no answer ({_reason(e)})") from None
        finally:
            resp.release()
        answer = self._judge(Answer(resp.status, raw, server), method, path, True,
                             frozenset({504}), ours)
        raise ErrorAnswer(answer)


def tls_context(ca: str | None, *, pinned: bool = False) -> ssl.SSLContext:
    """How https servers are verified: against `ca` (PEM text: the cluster's CA) when
    given, else against the system's trust store; host names are always checked.
    `pinned`: `ca` is the server's own certificate, trusted as itself (a master's
    leader loops reaching their own master)."""
    try:
        if not ca:
            return ssl.create_default_context()
        context = ssl.create_default_context(cadata=ca)
    except (ssl.SSLError, ValueError) as e:
        raise ClientError(f"not a PEM certificate ({e})") from None
    if pinned:
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def _unreachable(e: aiohttp.ClientError) -> str:
    """Why no connection was made, in the system's words: `connection refused`, `no
    route to host`, `connect timed out`, or the TLS check that failed."""
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return f"TLS: {_reason(e.certificate_error)}"
    if isinstance(e, aiohttp.ClientConnectorError):
        if isinstance(e.os_error, ssl.SSLError):
            # a failed handshake (https to a plain HTTP port...): its errno is OpenSSL's
            # error class, which strerror would misread as `operation not permitted`
            return f"TLS: {_reason(e.os_error)}"
        number = e.os_error.errno
        if number:
            return os.strerror(number).lower()
        return _reason(e.os_error)
    return "connect timed out"


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) < 200 else text[:200] + "..."


def _snippet(answer: Answer) -> str:
    try:
        body = json.loads(answer.body)
    except ValueError:
        return answer.body[:120].decode(errors="replace").strip() or f"HTTP {answer.status}"
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or f"HTTP {answer.status}")
    return f"HTTP {answer.status}"
