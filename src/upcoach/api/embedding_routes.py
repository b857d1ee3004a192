"""POST /v1/embeddings in OpenAI's shape, from the local model (llm/embeddings.py): never the cloud, whatever
the model id (``auto`` included), since nothing about embeddings needs it."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import Field, field_validator

from upcoach.api.openai_schemas import OpenAIWire, unsupported
from upcoach.api.service_schemas import EmbeddingList
from upcoach.errors import Unavailable
from upcoach.llm.base import serving_engine
from upcoach.llm.embeddings import LocalEmbedder
from upcoach.security.acting import ACT
from upcoach.services import Services

router = APIRouter(prefix="/v1")

Text = Annotated[str, Field(min_length=1, max_length=100_000)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=8192)]


class EmbeddingRequest(OpenAIWire):
    model: str = Field(min_length=1, max_length=256)
    input: Text | Annotated[list[Text], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)

    @field_validator("dimensions")
    @classmethod
    def _native_only(cls, value: int | None) -> int | None:
        # Cutting a vector short keeps its meaning only for models trained for it (Matryoshka); ours are not.
        if value is not None:
            raise unsupported("dimensions (the model's own size only; omit the field)")
        return value

    def inputs(self) -> list[str] | list[list[int]]:
        if isinstance(self.input, str):
            return [self.input]
        if self.input and isinstance(self.input[0], int):
            return [self.input]  # type: ignore[list-item]
        return self.input  # type: ignore[return-value]


def _embedder(services: Services) -> LocalEmbedder:
    engine = serving_engine(services.local) if services.local is not None else None
    config = getattr(engine, "config", None)
    if config is None:
        raise Unavailable(services.local_problem or "no local model to embed with")
    current = services.embedder
    if current is None or current.model_path != config.model_path:  # first use, or the model was swapped
        current = services.embedder = LocalEmbedder(config.model_path, config.model_id, config.threads)
    return current


@router.post("/embeddings", response_model=EmbeddingList)
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    services: Services = request.app.state.services
    services.pin_for(body.model)  # an unknown model is a 404, as on chat
    await services.subject(request, ACT, body.user)
    embedder = _embedder(services)
    result = await embedder.embed(body.inputs())
    data = [
        {"object": "embedding", "index": index, "embedding": _encoded(vector, body.encoding_format)}
        for index, vector in enumerate(result.vectors)
    ]
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    return {"object": "list", "data": data, "model": embedder.model_id, "usage": usage}


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector
