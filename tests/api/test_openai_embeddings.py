"""/v1/embeddings with the official openai SDK against a live `upcoach serve` and the real model."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from openai import OpenAI

from tests.conftest import LiveServer

TEXTS = ["I love running in the morning", "I enjoy jogging at dawn", "Corporate tax law is complex"]


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> OpenAI:
    return OpenAI(base_url=live_server.v1, api_key="unused", max_retries=0, timeout=300)


def test_batched_embeddings_float_and_base64_agree(client: OpenAI) -> None:
    floats = client.embeddings.create(model="default", input=TEXTS, encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in floats.data])
    assert vectors.shape[0] == 3 and vectors.shape[1] >= 256
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)  # normalized, as OpenAI's are
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] and similarity[0, 1] > similarity[1, 2]  # they mean something
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 10
    # The SDK asks for base64 by default and decodes it itself.
    decoded = client.embeddings.create(model="default", input=TEXTS)
    assert np.allclose(np.array([d.embedding for d in decoded.data]), vectors, atol=1e-6)


def test_token_ids_and_single_strings(client: OpenAI, live_server: LiveServer) -> None:
    tokens = httpx.post(live_server.base_url + "/tokenize", json={"content": TEXTS[0]}, timeout=30).json()["tokens"]
    by_ids = client.embeddings.create(model="default", input=tokens, encoding_format="float").data[0].embedding
    by_text = client.embeddings.create(model="default", input=TEXTS[0], encoding_format="float").data[0].embedding
    assert np.allclose(by_ids, by_text, atol=1e-4)


def test_bad_embedding_requests_are_named(live_server: LiveServer) -> None:
    url = live_server.v1 + "/embeddings"
    cases = [
        ({"model": "default", "input": "hi", "dimensions": 64}, "unsupported_parameter", "dimensions"),
        ({"model": "default", "input": ""}, "invalid_request", "input"),
        ({"model": "default", "input": "hi", "encoding_format": "int8"}, "invalid_request", "encoding_format"),
        ({"model": "default", "input": "hi", "surprise": 1}, "unsupported_parameter", "surprise"),
    ]
    for body, code, param in cases:
        response = httpx.post(url, json=body, timeout=30)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == code and error["param"].startswith(param), (body, error)
    assert httpx.post(url, json={"model": "nope", "input": "hi"}, timeout=30).status_code == 404
