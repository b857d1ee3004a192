"""The real model, encrypted into the store, loaded by llama.cpp from an in-memory file: no plaintext on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from upcoach.llm.base import ChatMessage, ChatRequest, GenerationParams
from upcoach.llm.llamacpp import EngineConfig, LlamaCppEngine
from upcoach.modelstore.catalog import DEFAULT_MODEL, get_entry
from upcoach.modelstore.store import ModelStore

pytestmark = pytest.mark.slow


async def test_the_real_model_loads_from_memory_and_answers(store: ModelStore, model_path: Path) -> None:
    entry = get_entry(DEFAULT_MODEL)
    version = await store.import_file(model_path, entry.name, entry.version, entry.sha256)
    assert (version.id, version.size, version.quantization) == (f"{entry.name}@0.9.0", entry.size, "Q4_K_M")
    await store.registry.activate(version.id)

    stored = [p for p in store.dir.rglob("*") if p.is_file()]
    assert [p.name for p in stored if p.suffix == ".ucm"] == [f"{version.id}.ucm"]
    for path in stored:
        assert not path.name.endswith(".gguf")
        with path.open("rb") as handle:
            assert handle.read(4) != b"GGUF", path
    assert _at(model_path, 10 << 20) != _at(Path(version.path), 10 << 20)

    async with store.open_plaintext(version.id) as path:
        assert str(path).startswith("/proc/self/fd/")
        engine = LlamaCppEngine(EngineConfig(model_path=path, model_id=entry.name, threads=2, context_size=512))
        await engine.start()
        try:
            assert engine.ready, (await engine.health()).reason
            request = ChatRequest(
                (ChatMessage("user", "Say hello in three words."),),
                GenerationParams(max_tokens=8, temperature=0.0, seed=1),
                "memfd-test",
            )
            completion = await engine.chat(request)
        finally:
            await engine.stop()
    assert completion.text.strip()
    assert completion.usage.completion_tokens > 0


def _at(path: Path, offset: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(4096)
