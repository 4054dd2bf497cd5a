"""A small JSON and server-sent-events client for OpenAI-compatible servers (stdlib only).

    >>> client = JSONClient("http://127.0.0.1:8000/v1", api_key=None, timeout=30)   # doctest: +SKIP
    >>> client.post("/chat/completions", {"model": "m", "messages": [...]})["choices"]  # doctest: +SKIP
    >>> for event in client.stream("/chat/completions", {..., "stream": True}): ...  # doctest: +SKIP

- **Errors reach the user as the server wrote them.** A 4xx/5xx answer becomes ``RemoteError``
  with its HTTP status and the ``error.message`` (and ``param``) of OpenAI's envelope, or the
  start of the body when it is not that envelope. A server that cannot be reached becomes
  ``RemoteUnreachable``, naming the URL and the cause.
- **Retries with backoff** on 429 and 503 (and on a refused or reset connection, and for a
  GET on any network error): up to ``retries`` more tries, waiting ``backoff x 2**attempt``
  seconds, or the server's ``Retry-After`` when it is a sane number (capped at ``max_wait``).
  A POST that timed out is not sent again (the server may still be generating it). A stream
  is retried only before its first event; a stream that breaks later is ``RemoteUnreachable``.
- **Timeouts**: ``timeout`` seconds to connect and between two reads.
- **No redirects**: a 3xx is a ``RemoteError`` naming the new URL, since following it would
  carry the key to another host.
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.error
import urllib.request
from typing import Iterator

RETRY_STATUSES = (429, 503)
RETRY_CONNECT = (ConnectionRefusedError, ConnectionResetError)  # the request never reached the model


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: urllib would follow it with our Authorization header to any host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise RemoteError(req.full_url, code, f"redirected to {newurl}; give that URL (with /v1) instead")


_OPENER = urllib.request.build_opener(_NoRedirects)


class RemoteError(RuntimeError):
    """The remote server answered with an error: ``status``, ``message`` (its own), ``param``."""

    def __init__(self, url: str, status: int, message: str, param: str | None = None, kind: str | None = None):
        self.url, self.status, self.message, self.param, self.kind = url, status, message, param, kind
        where = f" (param {param})" if param else ""
        super().__init__(f"the remote server at {url} answered HTTP {status}: {message}{where}")


class RemoteUnreachable(RuntimeError):
    """No answer from the remote server at all (refused, timed out, name not found)."""

    def __init__(self, url: str, cause: str, tries: int):
        self.url, self.cause, self.tries = url, cause, tries
        super().__init__(f"cannot reach the remote server at {url} after {tries} tries: {cause}")


def _error_from(url: str, status: int, body: bytes) -> RemoteError:
    text = body.decode("utf-8", "replace")
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        return RemoteError(url, status, str(error["message"]), error.get("param"), error.get("type"))
    if isinstance(error, str) and error:  # llama.cpp and some proxies send {"error": "..."}
        return RemoteError(url, status, error)
    return RemoteError(url, status, text.strip()[:500] or "(empty body)")


class JSONClient:
    """POST/GET JSON to ``base_url`` (ending in ``/v1``), with retries; see the module docstring."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, max_wait: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.api_key, self.timeout, self.retries = api_key, timeout, retries
        self.backoff, self.max_wait = backoff, max_wait
        self.sleep = time.sleep  # tests may count the waits

    def _request(self, method: str, path: str, body: dict | None):
        url = self.base_url + path
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return url, urllib.request.Request(url, data=data, headers=headers, method=method)

    def _open(self, method: str, path: str, body: dict | None):
        """The open response, after retrying 429/503 and refused connections."""
        url, request = self._request(method, path, body)
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2**attempt
            try:
                return _OPENER.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                payload = exc.read()
                if exc.code not in RETRY_STATUSES or attempt == self.retries:
                    raise _error_from(url, exc.code, payload) from None
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                try:
                    seconds = float(retry_after) if retry_after else None
                except ValueError:
                    seconds = None
                if seconds is not None and math.isfinite(seconds) and seconds >= 0:
                    wait = seconds
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                again = method == "GET" or isinstance(reason, RETRY_CONNECT) or isinstance(exc, RETRY_CONNECT)
                if attempt == self.retries or not again:
                    raise RemoteUnreachable(url, str(reason) or type(exc).__name__, attempt + 1) from None
            self.sleep(min(wait, self.max_wait))
        raise AssertionError("unreachable")  # the loop returns or raises

    def get(self, path: str) -> dict:
        with self._open("GET", path, None) as response:
            return self._json(response)

    def post(self, path: str, body: dict) -> dict:
        with self._open("POST", path, body) as response:
            return self._json(response)

    def _json(self, response) -> dict:
        raw = response.read()
        try:
            return json.loads(raw)
        except ValueError:  # not echoed: a URL that is not an OpenAI server must not become a way to read it
            raise RemoteError(response.geturl(), response.status,
                              f"the answer is not JSON ({len(raw)} bytes): is this an OpenAI-compatible /v1 URL?") \
                from None

    def stream(self, path: str, body: dict) -> Iterator[dict]:
        """The ``data:`` events of a server-sent-events answer, parsed, until ``[DONE]``.

        An event that carries ``error`` (as OpenAI and vLLM send one mid-stream) raises ``RemoteError``.
        """
        url = self.base_url + path
        with self._open("POST", path, body) as response:
            try:
                yield from self._events(url, response)
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, a truncated chunk
                raise RemoteUnreachable(url, f"the stream broke: {exc or type(exc).__name__}", 1) from None

    @staticmethod
    def _events(url: str, response) -> Iterator[dict]:
        finished = False  # a choice said why it ended: a server that skips [DONE] after that is fine
        for raw in response:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue  # comments, event names, keep-alives
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError:
                raise RemoteError(url, 200, f"a stream event is not JSON ({len(data)} characters)") from None
            if isinstance(event, dict) and event.get("error"):
                error = event["error"]
                message = error.get("message") if isinstance(error, dict) else str(error)
                raise RemoteError(url, 200, f"error in the stream: {message}")
            if isinstance(event, dict) and any(isinstance(c, dict) and c.get("finish_reason")
                                               for c in event.get("choices") or []):
                finished = True
            yield event
        if not finished:  # the connection closed mid-answer (a length-framed body just stops)
            raise OSError("it ended before its last event")
