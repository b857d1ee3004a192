"""Any OpenAI-compatible server as a backend: a cloud API, or self-hosted vLLM / llama-server / Ollama replicas.

Why this shape: the hybrid engine chooses where a request goes and does its own fallback, so this adapter never
retries; instead it says precisely how a request failed. ``before_first_token`` on every error tells the caller
whether the request can still go elsewhere without the user seeing a partial answer. The deadlines are ours:
routing needs "first token within N s" and "whole answer within M s", not a timeout per read. Live measurements
(EWMA time to first token and decode speed, outstanding requests) feed the routing engine and ``BackendPool``.

In-flight calls are bounded (``max_inflight``): one more is refused at once with ``Overloaded`` (429, Retry-After),
which the engine may answer elsewhere, rather than queued behind the others until it times out. The HTTP client
(llm/upstream.py) keeps that many connections (and two for health probes), so an admitted call never waits for one.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import aiohttp

from upcoach.errors import BackendError, BackendRateLimited, BackendTimeout, InvalidRequest, Overloaded
from upcoach.llm.base import (
    BackendInfo,
    ChatMessage,
    ChatRequest,
    Chunk,
    Completion,
    FinishReason,
    Health,
    TokenLogprob,
    TopLogprob,
    Usage,
    collect,
)
from upcoach.llm.structured import call_text, parse_calls
from upcoach.llm.upstream import ChatStream, PeerStatusError, UpstreamClient

log = logging.getLogger(__name__)

# After a connection failure health() stays false this long: long enough for routing to steer around a dead peer,
# short enough that one blip does not exile a cloud backend, which has no health loop to bring it back.
DOWN_HOLD_S = 5.0
EWMA_ALPHA = 0.2


# Connection-level failures: refused, reset, closed mid-answer, a body cut short.
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError)


def is_peer_failure(exc: BaseException) -> bool:
    """Whether a backend error means the peer itself is failing (unreachable, dropped the connection, 5xx), so
    another replica may answer, as opposed to the peer judging the request (4xx) or being merely slow or busy."""
    cause = exc.__cause__
    if isinstance(cause, _CONNECTION_ERRORS) and not isinstance(cause, aiohttp.ServerTimeoutError):
        return True
    return isinstance(cause, PeerStatusError) and cause.status >= 500


DEFAULT_MAX_INFLIGHT = 512
PROBE_CONNECTIONS = 2
# Seconds a refused caller is told to wait: in-flight calls finish within about a second at the speeds we route
# to, and Retry-After has whole seconds.
SATURATED_RETRY_AFTER_S = 1.0


class OpenAICompatBackend:
    """One OpenAI-compatible endpoint through our lean client (llm/upstream.py). ``aclose()`` releases it."""

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        api_key: str | None = None,
        kind: Literal["cloud", "pool"] = "cloud",
        connect_timeout: float = 3.0,
        first_token_timeout: float = 10.0,
        total_timeout: float = 60.0,
        *,
        default_headers: Mapping[str, str] | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        socket_path: str | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.kind: Literal["cloud", "pool"] = kind
        self.connect_timeout = connect_timeout
        self.first_token_timeout = first_token_timeout
        self.total_timeout = total_timeout
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.max_inflight = max_inflight
        self._client = UpstreamClient(
            self.base_url,
            # Only the key given here, never one from the environment: a self-hosted peer must not get the cloud's.
            api_key=api_key,
            headers=default_headers,
            # Two more than the calls that may be in flight: a health probe never waits behind a full pool.
            max_connections=max_inflight + PROBE_CONNECTIONS,
            connect_timeout=connect_timeout,
            socket_path=socket_path,
        )
        self._outstanding = 0
        self._ttft_ms: float | None = None
        self._decode_tps: float | None = None
        self._down_at: float | None = None  # monotonic time of the last connection failure or failed probe
        self._progress_at: float | None = None  # monotonic time a call last heard from the peer (200, a piece)
        self._down_reason = ""
        self._last_error_at: float | None = None  # wall clock, for the dashboard
        self._last_error = ""

    # ---- Backend interface ------------------------------------------------------------------------------------
    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            kind=self.kind,
            model=self.model,
            details={
                "base_url": self.base_url,
                "model": self.model,
                "ttft_ms_ewma": self._ttft_ms,
                "decode_tps_ewma": self._decode_tps,
                "outstanding": self._outstanding,
                "max_inflight": self.max_inflight,
                "last_error_at": self._last_error_at,
                "last_error": self._last_error,
            },
        )

    @property
    def outstanding(self) -> int:
        return self._outstanding

    @property
    def saturated(self) -> bool:
        """True when another call now would be refused (``max_inflight`` calls in flight)."""
        return self._outstanding >= self.max_inflight

    async def health(self) -> Health:
        down = self._down_at is not None and time.monotonic() - self._down_at < DOWN_HOLD_S
        return Health(not down, self._down_reason if down else "", self._outstanding, 0)

    async def probe(self) -> bool:
        """GET {base_url}/models within the connect timeout; the pool's health checker calls this.

        A failed probe while calls to this peer are in flight and still hearing from it (a token or an admission
        within the first-token timeout) means busy, not dead: a single-slot server such as llama_cpp.server does
        not answer /models while it generates, and taking it out would refuse the work it is visibly doing."""
        try:
            await self._client.get_json("/models", within=self.connect_timeout)
        except Exception as exc:  # never raises: any failure is simply "not healthy"
            if self._busy_and_alive():
                log.info("%s: health probe failed (%s) while its calls progress: busy, kept", self.name,
                         _describe(exc))  # fmt: skip
                return True
            self._mark_down(f"health probe failed: {_describe(exc)}")
            return False
        self._down_at = None
        return True

    def _busy_and_alive(self) -> bool:
        return (
            self._outstanding > 0
            and self._progress_at is not None
            and time.monotonic() - self._progress_at < self.first_token_timeout
        )

    async def chat(self, request: ChatRequest) -> Completion:
        completion = await collect(self.stream(request))
        if completion is None:
            raise BackendError(f"{self.name}: the stream ended without a result", backend=self.name)
        return completion

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        if request.prompt is not None:
            raise InvalidRequest(f"{self.name} takes chat messages, not raw text to continue", param="prompt")
        if request.grammar is not None:
            # Remote servers differ in how (and whether) they constrain output: refuse rather than return free text.
            raise InvalidRequest(f"{self.name} cannot follow a grammar; only the local engine can", param="grammar")
        if self._outstanding >= self.max_inflight:
            raise Overloaded(
                f"{self.name}: {self._outstanding} calls in flight, its limit; try again shortly",
                retry_after=SATURATED_RETRY_AFTER_S,
            )
        # Counted before the first await, so concurrent pool picks already see this request.
        self._outstanding += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_deadline = started + min(self.first_token_timeout, self.total_timeout)
        total_deadline = started + self.total_timeout
        response: ChatStream | None = None
        first_at: float | None = None
        pieces = 0
        finish: str | None = None
        usage: dict[str, Any] | None = None
        calls: dict[int, dict[str, str]] = {}
        try:
            try:
                async with asyncio.timeout_at(first_deadline):
                    response = await self._client.stream_chat(self._body(request))
            except aiohttp.ServerTimeoutError as exc:  # aiohttp's connect timeout, not our deadline
                raise self._translate(exc, before_first_token=True) from exc
            except TimeoutError as exc:
                raise self._timeout(before_first_token=True) from exc
            except Exception as exc:
                raise self._translate(exc, before_first_token=True) from exc
            self._down_at = None
            self._progress_at = time.monotonic()
            yield Chunk()  # admitted: the peer answered 200 and is streaming

            while True:
                try:
                    # Only the wait for the peer sits under the deadline, never our yield: the consumer's time
                    # between chunks must not be cancelled by our timer.
                    async with asyncio.timeout_at(first_deadline if first_at is None else total_deadline):
                        event = await anext(response)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise self._timeout(before_first_token=first_at is None) from exc
                except Exception as exc:  # a dropped connection, an error event, a body we could not parse
                    raise self._translate(exc, before_first_token=first_at is None) from exc
                self._progress_at = time.monotonic()
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or ():
                    # n > 1: every choice streams under its own index; only choice 0 may carry tool calls.
                    index = int(choice.get("index") or 0)
                    delta = choice.get("delta") or {}
                    if index == 0:
                        _gather_calls(calls, delta.get("tool_calls"))
                    content = delta.get("content") or ""
                    logprobs = _logprobs(choice.get("logprobs"))
                    if content or logprobs:
                        if first_at is None:
                            first_at = loop.time()
                        pieces += 1
                        yield Chunk(content, index=index, logprobs=logprobs)
                    if choice.get("finish_reason"):
                        if index == 0:
                            finish = choice["finish_reason"]
                        else:
                            yield Chunk(index=index, finish="length" if choice["finish_reason"] == "length" else "stop")
            if calls:
                # Tool calls travel inside the service as text in the template's format (llm/structured.py).
                if first_at is None:
                    first_at = loop.time()
                text = "\n".join(call_text(c["name"], c["arguments"]) for _, c in sorted(calls.items()))
                yield Chunk(("\n" if pieces else "") + text)
                pieces += 1

            if finish is None:
                # The body ended cleanly but the answer did not: a proxy or a crashed worker cut it short.
                error = BackendError(
                    f"{self.name}: the stream ended without a finish_reason",
                    backend=self.name,
                    before_first_token=first_at is None,
                )
                self._note_error(str(error))
                raise error
            ended = loop.time()
            final = self._completion(request, started, first_at, ended, pieces, finish, usage)
            yield Chunk(final=final)
        finally:
            # Runs on success, on error, and when the consumer closes us early: closing the response closes the
            # connection, which is how the peer learns to stop generating.
            self._outstanding -= 1
            if response is not None:
                await response.close()

    # ---- lifecycle --------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        await self._client.aclose()

    # ---- internals --------------------------------------------------------------------------------------------
    def _body(self, request: ChatRequest) -> dict[str, Any]:
        params = request.params
        messages = [_wire_message(m) for m in request.messages]
        if request.continuation:
            # An answer another backend began: a trailing assistant message is how OpenAI-style servers take a
            # prefill (llama.cpp's llama-server continues it; vLLM does with continue_final_message).
            messages.append({"role": "assistant", "content": request.continuation})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        # max_tokens rather than max_completion_tokens: it is the one every self-hosted server understands.
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.presence_penalty:
            body["presence_penalty"] = params.presence_penalty
        if params.frequency_penalty:
            body["frequency_penalty"] = params.frequency_penalty
        if params.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias}
        if params.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = params.logprobs
        if params.n > 1:
            body["n"] = params.n
        body.update(_structure(request))
        return body

    def _completion(
        self,
        request: ChatRequest,
        started: float,
        first_at: float | None,
        ended: float,
        pieces: int,
        finish: str,
        usage: dict[str, Any] | None,
    ) -> Completion:
        if usage is not None:
            details = usage.get("prompt_tokens_details") or {}
            cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
            counted = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), cached)
        else:
            # Servers that ignore include_usage (llama_cpp.server does) still need a bill: chunks are close to
            # tokens, and four characters per token is the usual estimate for the prompt.
            chars = sum(len(m.content) for m in request.messages) + len(request.continuation)
            counted = Usage(math.ceil(chars / 4), pieces)
        ttft_ms = (first_at - started) * 1000 if first_at is not None else None
        decode_s = ended - first_at if first_at is not None else 0.0
        self._observe(
            ttft_ms,
            (counted.completion_tokens - 1) / decode_s if counted.completion_tokens > 1 and decode_s > 0 else None,
        )
        reason: FinishReason = "length" if finish == "length" else "stop"
        return Completion(
            text="",
            finish_reason=reason,
            usage=counted,
            model=self.model,
            first_token_ms=ttft_ms,
            total_ms=(ended - started) * 1000,
        )

    def _observe(self, ttft_ms: float | None, decode_tps: float | None) -> None:
        def ewma(old: float | None, new: float | None) -> float | None:
            if new is None:
                return old
            return new if old is None else (1 - EWMA_ALPHA) * old + EWMA_ALPHA * new

        self._ttft_ms = ewma(self._ttft_ms, ttft_ms)
        self._decode_tps = ewma(self._decode_tps, decode_tps)

    def _timeout(self, *, before_first_token: bool) -> BackendTimeout:
        if before_first_token:
            limit = min(self.first_token_timeout, self.total_timeout)
            message = f"{self.name}: no first token within {limit:g} s"
        else:
            message = f"{self.name}: the answer did not finish within {self.total_timeout:g} s"
        self._note_error(message)
        return BackendTimeout(message, backend=self.name, before_first_token=before_first_token)

    def _translate(self, exc: Exception, *, before_first_token: bool) -> BackendError:
        """Our error for a client or peer error, with the peer's own words where it gave any."""
        name = self.name
        error: BackendError
        if isinstance(exc, aiohttp.ServerTimeoutError):
            log.warning("%s: timed out reaching the peer: %r", name, exc)
            self._mark_down("timed out connecting")
            error = BackendTimeout(
                f"{name}: timed out connecting to the peer", backend=name, before_first_token=before_first_token
            )
        elif isinstance(exc, _CONNECTION_ERRORS):
            log.warning("%s: connection failed: %r", name, exc)
            self._mark_down(f"connection failed: {_describe(exc)}")
            error = BackendError(
                f"{name}: connection failed: {_describe(exc)}",
                backend=name,
                before_first_token=before_first_token,
            )
        elif isinstance(exc, PeerStatusError) and exc.status == 429:
            error = BackendRateLimited(
                f"{name}: rate limited by the peer: {exc.message}",
                backend=name,
                before_first_token=before_first_token,
                retry_after=_retry_after(exc.headers),
            )
        elif isinstance(exc, PeerStatusError) and exc.status >= 500:
            error = BackendError(
                f"{name}: the peer failed: {exc.message}", backend=name, before_first_token=before_first_token
            )
        elif isinstance(exc, PeerStatusError) and exc.status == 0:
            error = BackendError(
                f"{name}: the peer reported an error mid-answer: {exc.message}",
                backend=name,
                before_first_token=before_first_token,
            )
        elif isinstance(exc, PeerStatusError):
            # A 4xx here (say, the peer's context is smaller than ours) is our upstream's fault, not the user's:
            # BackendError answers 502, and the peer's message says what went wrong.
            error = BackendError(
                f"{name}: the peer rejected the request ({exc.status}): {exc.message}",
                backend=name,
                before_first_token=before_first_token,
            )
        else:
            log.warning("%s: unusable answer from the peer: %r", name, exc)
            error = BackendError(
                f"{name}: unusable answer from the peer: {_describe(exc)}",
                backend=name,
                before_first_token=before_first_token,
            )
        self._note_error(error.message)
        return error

    def _mark_down(self, reason: str) -> None:
        if self._down_at is None:
            log.warning("%s is down: %s", self.name, reason)
        self._down_at = time.monotonic()
        self._down_reason = reason

    def _note_error(self, message: str) -> None:
        self._last_error_at = time.time()
        self._last_error = message


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    """A message in OpenAI's shape: tool calls (text inside the service) back into ``tool_calls``."""
    if message.role == "tool":
        return {"role": "tool", "content": message.content, "tool_call_id": message.call_ids[0]}
    if message.role == "assistant" and message.call_ids:
        content, calls = parse_calls(message.content)
        wire_calls = [
            {"id": call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for call_id, c in zip(message.call_ids, calls, strict=False)
        ]
        return {"role": "assistant", "content": content, "tool_calls": wire_calls}
    return {"role": message.role, "content": message.content}


def _structure(request: ChatRequest) -> dict[str, Any]:
    """``response_format`` and the tool fields, passed on as the caller gave them."""
    body: dict[str, Any] = {}
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None:
        schema = {"name": fmt.name, "schema": fmt.schema, "strict": fmt.strict}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    tools = request.tools
    if tools is not None:
        body["tools"] = [
            {"type": "function", "function": {"name": f.name, "description": f.description,
                                              "parameters": f.parameters, "strict": f.strict}}
            for f in tools.functions
        ]  # fmt: skip
        named = tools.choice not in ("auto", "none", "required")
        body["tool_choice"] = {"type": "function", "function": {"name": tools.choice}} if named else tools.choice
        body["parallel_tool_calls"] = tools.parallel
    return body


def _logprobs(wire: object) -> tuple[TokenLogprob, ...]:
    """A streamed choice's ``logprobs.content`` as the service carries it (empty when the peer sent none)."""
    content = wire.get("content") if isinstance(wire, dict) else None
    if not isinstance(content, list):
        return ()
    return tuple(
        TokenLogprob(str(e.get("token", "")), float(e.get("logprob", 0.0)), _raw(e),
                     tuple(TopLogprob(str(t.get("token", "")), float(t.get("logprob", 0.0)), _raw(t))
                           for t in e.get("top_logprobs") or () if isinstance(t, dict)))
        for e in content
        if isinstance(e, dict)
    )  # fmt: skip


def _raw(entry: dict[str, Any]) -> bytes:
    raw = entry.get("bytes")
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw)
    return str(entry.get("token", "")).encode()


def _gather_calls(calls: dict[int, dict[str, str]], deltas: object) -> None:
    """Streamed ``tool_calls`` deltas, joined per index (the name comes once, the arguments in pieces)."""
    for delta in deltas if isinstance(deltas, list) else ():
        call = calls.setdefault(int(delta.get("index") or 0), {"name": "", "arguments": ""})
        function = delta.get("function") or {}
        call["name"] += function.get("name") or ""
        call["arguments"] += function.get("arguments") or ""


# What a connection failure was, in words that name no host, address or socket path: exception texts do (aiohttp's
# "Cannot connect to unix socket /tmp/upcoach-…/engine.sock", "…host gpu-1:8000…"), and these words reach callers in
# error messages and routing reasons. The exception's own text goes to the log only. First match wins.
_FAILURE_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (aiohttp.ClientConnectorDNSError, "host name not resolved"),
    (ConnectionRefusedError, "connection refused"),
    (FileNotFoundError, "connection refused"),  # a Unix socket that is not there (yet)
    (ConnectionResetError, "connection reset"),
    (aiohttp.ServerDisconnectedError, "the peer closed the connection"),
    (aiohttp.ClientPayloadError, "the answer was cut short"),
    (aiohttp.ClientConnectorError, "cannot connect"),
    (TimeoutError, "timed out"),
    (aiohttp.ClientConnectionError, "connection error"),
    (OSError, "network error"),
)


def _describe(exc: BaseException) -> str:
    """The kind of failure (``_FAILURE_KINDS``), from the error, its OS error or its cause; else its type's name.
    A peer's error status keeps the peer's own words (it chose them for its callers)."""
    if isinstance(exc, PeerStatusError):
        return str(exc)
    chain = [item for item in (getattr(exc, "os_error", None), exc, exc.__cause__) if item is not None]
    for kind, words in _FAILURE_KINDS:
        if any(isinstance(item, kind) for item in chain):
            return words
    return type(exc).__name__


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from Retry-After (seconds or an HTTP date), or OpenAI's retry-after-ms; None when absent."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
