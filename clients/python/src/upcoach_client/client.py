"""``Client`` (blocking) and ``AsyncClient`` (asyncio) for the UpCoach API, over httpx.

Both send the calls of ``calls.py``, retry 429/503 (and connection failures of repeatable requests) with backoff
honouring Retry-After, and raise the exception named after the API's error code (``errors.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypeVar

import httpx

from upcoach_client import calls
from upcoach_client.calls import Call, Message
from upcoach_client.errors import ConnectionFailed, UpcoachError, error_for
from upcoach_client.models import (
    Answer,
    Changes,
    Device,
    DeviceProfile,
    Manifest,
    PrivacyLevel,
    Recommendation,
    Registration,
    RouteAdvice,
    SigningKey,
    StreamEvent,
    SyncResult,
)
from upcoach_client.retry import RETRY_STATUSES, RetryPolicy, repeatable, retry_after
from upcoach_client.sse import aevents, events

T = TypeVar("T")
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": "upcoach-client-python/0.1"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _request(http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
    return http.build_request(call.method, call.path, params=call.params or None, json=call.json, headers=call.headers)


def _raise_for(response: httpx.Response, body: Any) -> None:
    if response.status_code >= 400:
        raise error_for(response.status_code, body, retry_after(response))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _connection_failed(exc: httpx.TransportError) -> ConnectionFailed:
    return ConnectionFailed(f"{type(exc).__name__}: {exc}")


class Client:
    """Blocking client. ``api_key``: a user's or a device's key. Use it as a context manager, or ``close()``."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        http: httpx.Client | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.http = http or httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _open(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        """Send with retries; the response of the last try (status < 400), else the error is raised."""
        attempt = 0
        while True:
            attempt += 1
            request = _request(self.http, call)
            try:
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                wait = self.retry.delay(attempt, None) if repeatable(request) else None
                if wait is None:
                    raise _connection_failed(exc) from exc
                time.sleep(wait)
                continue
            if response.status_code in RETRY_STATUSES:
                wait = self.retry.delay(attempt, retry_after(response))
                if wait is not None:
                    response.close()
                    time.sleep(wait)
                    continue
            if response.status_code >= 400:
                if stream:
                    response.read()
                response.close()
                _raise_for(response, _json(response))
            return response

    def send(self, call: Call[T]) -> T:
        response = self._open(call)
        return call.parse(_json(response))

    # ---- model distribution ----
    def recommend(self, profile: DeviceProfile) -> Recommendation:
        return self.send(calls.recommend(profile))

    def signing_key(self) -> SigningKey:
        return self.send(calls.signing_key())

    def manifest(self, model_id: str) -> Manifest:
        return self.send(calls.manifest(model_id))

    def bundle_signing_key(self) -> dict[str, Any]:
        return self.send(calls.bundle_signing_key())

    def strategies_bundle(self, since: str | None = None) -> dict[str, Any]:
        return self.send(calls.strategies_bundle(since))

    # ---- devices and sync ----
    def register_device(
        self,
        *,
        model: str,
        os: str,
        capabilities: Sequence[str] = (),
        ram_mb: int | None = None,
        model_version: str | None = None,
        idempotency_key: str | None = None,
    ) -> Registration:
        return self.send(
            calls.register_device(
                model=model,
                os=os,
                capabilities=capabilities,
                ram_mb=ram_mb,
                model_version=model_version,
                idempotency_key=idempotency_key,
            )  # fmt: skip
        )

    def devices(self) -> list[Device]:
        return self.send(calls.devices())

    def revoke_device(self, device_id: str) -> Device:
        return self.send(calls.revoke_device(device_id))

    def sync(
        self, items: Sequence[dict[str, Any]], *, model_version: str | None = None, idempotency_key: str | None = None
    ) -> SyncResult:
        return self.send(calls.sync(items, model_version, idempotency_key))

    def changes(self, since: str | None = None) -> Changes:
        return self.send(calls.changes(since))

    # ---- answers ----
    def route(
        self,
        messages: Sequence[Message],
        *,
        privacy_level: PrivacyLevel = "private",
        device: DeviceProfile | None = None,
    ) -> RouteAdvice:
        return self.send(calls.route(messages, privacy_level, device))

    def process(
        self,
        messages: Sequence[Message],
        *,
        privacy_level: PrivacyLevel = "private",
        device: DeviceProfile | None = None,
        max_tokens: int | None = None,
    ) -> Answer:
        return self.send(calls.process(messages, privacy_level, device, max_tokens))

    def stream(
        self,
        messages: Sequence[Message],
        *,
        privacy_level: PrivacyLevel = "private",
        device: DeviceProfile | None = None,
        max_tokens: int | None = None,
    ) -> Iterator[StreamEvent]:
        """Token events as they come, then ``done``; an ``error`` event mid-stream is raised as its exception."""
        response = self._open(calls.stream(messages, privacy_level, device, max_tokens), stream=True)
        try:
            for event in events(response.iter_lines()):
                if event.event == "error":
                    raise error_for(500, event.data)
                yield event
        except httpx.TransportError as exc:
            raise _connection_failed(exc) from exc
        finally:
            response.close()

    def journal_entry(
        self, transcript: str, recorded_at: str, *, mood: int | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return self.send(calls.journal_entry(transcript, recorded_at, mood, idempotency_key))

    def feedback(
        self, request_id: str, rating: int, *, comment: str | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return self.send(calls.feedback(request_id, rating, comment, idempotency_key))

    def download(self, path: str, headers: dict[str, str]) -> httpx.Response:
        """A streamed GET (for ranged artifact downloads); the caller closes it. Errors raise like every call."""
        return self._open(Call("GET", path, lambda _: None, headers=headers), stream=True)


class AsyncClient:
    """The same API as ``Client``, for asyncio."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.http = http or httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _open(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            request = _request(self.http, call)
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                wait = self.retry.delay(attempt, None) if repeatable(request) else None
                if wait is None:
                    raise _connection_failed(exc) from exc
                await asyncio.sleep(wait)
                continue
            if response.status_code in RETRY_STATUSES:
                wait = self.retry.delay(attempt, retry_after(response))
                if wait is not None:
                    await response.aclose()
                    await asyncio.sleep(wait)
                    continue
            if response.status_code >= 400:
                if stream:
                    await response.aread()
                await response.aclose()
                _raise_for(response, _json(response))
            return response

    async def send(self, call: Call[T]) -> T:
        response = await self._open(call)
        return call.parse(_json(response))

    async def recommend(self, profile: DeviceProfile) -> Recommendation:
        return await self.send(calls.recommend(profile))

    async def signing_key(self) -> SigningKey:
        return await self.send(calls.signing_key())

    async def manifest(self, model_id: str) -> Manifest:
        return await self.send(calls.manifest(model_id))

    async def bundle_signing_key(self) -> dict[str, Any]:
        return await self.send(calls.bundle_signing_key())

    async def strategies_bundle(self, since: str | None = None) -> dict[str, Any]:
        return await self.send(calls.strategies_bundle(since))

    async def register_device(
        self,
        *,
        model: str,
        os: str,
        capabilities: Sequence[str] = (),
        ram_mb: int | None = None,
        model_version: str | None = None,
        idempotency_key: str | None = None,
    ) -> Registration:
        return await self.send(
            calls.register_device(
                model=model,
                os=os,
                capabilities=capabilities,
                ram_mb=ram_mb,
                model_version=model_version,
                idempotency_key=idempotency_key,
            )  # fmt: skip
        )

    async def devices(self) -> list[Device]:
        return await self.send(calls.devices())

    async def revoke_device(self, device_id: str) -> Device:
        return await self.send(calls.revoke_device(device_id))

    async def sync(
        self, items: Sequence[dict[str, Any]], *, model_version: str | None = None, idempotency_key: str | None = None
    ) -> SyncResult:
        return await self.send(calls.sync(items, model_version, idempotency_key))

    async def changes(self, since: str | None = None) -> Changes:
        return await self.send(calls.changes(since))

    async def route(
        self,
        messages: Sequence[Message],
        *,
        privacy_level: PrivacyLevel = "private",
        device: DeviceProfile | None = None,
    ) -> RouteAdvice:
        return await self.send(calls.route(messages, privacy_level, device))

    async def process(
        self,
        messages: Sequence[Message],
        *,
        privacy_level: PrivacyLevel = "private",
        device: DeviceProfile | None = None,
        max_tokens: int | None = None,
    ) -> Answer:
        return await self.send(calls.process(messages, privacy_level, device, max_tokens))

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        privacy_level: PrivacyLevel = "private",
        device: DeviceProfile | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[StreamEvent]:
        response = await self._open(calls.stream(messages, privacy_level, device, max_tokens), stream=True)
        try:
            async for event in aevents(response.aiter_lines()):
                if event.event == "error":
                    raise error_for(500, event.data)
                yield event
        except httpx.TransportError as exc:
            raise _connection_failed(exc) from exc
        finally:
            await response.aclose()

    async def journal_entry(
        self, transcript: str, recorded_at: str, *, mood: int | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self.send(calls.journal_entry(transcript, recorded_at, mood, idempotency_key))

    async def feedback(
        self, request_id: str, rating: int, *, comment: str | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self.send(calls.feedback(request_id, rating, comment, idempotency_key))


__all__ = ["AsyncClient", "Client", "UpcoachError"]
