"""The on-device model: llama-cpp-python loads the verified GGUF and streams answers on the phone's own cores.

The load time is measured and reported (the plan's gate is under 30 s on a phone). The file is verified against
the signed manifest right before it is loaded: a file edited after its download is refused, not run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from upcoach_client.device.download import verify_file
from upcoach_client.models import Manifest

LOAD_GATE_SECONDS = 30.0


class LocalModel:
    def __init__(self, llama: Any, path: Path, load_seconds: float) -> None:
        self._llama = llama
        self.path = path
        self.load_seconds = load_seconds

    @classmethod
    def load(
        cls, path: Path, manifest: Manifest, public_key: bytes, *, context_size: int = 2048, threads: int = 2
    ) -> LocalModel:
        """Verify, then load. Raises VerificationFailed for a tampered file; ImportError without the runtime
        (``pip install 'upcoach-client[local]'``)."""
        verify_file(path, manifest, public_key)
        from llama_cpp import Llama

        started = time.perf_counter()
        llama = Llama(model_path=str(path), n_ctx=context_size, n_threads=threads, verbose=False)
        return cls(llama, path, time.perf_counter() - started)

    @property
    def within_load_gate(self) -> bool:
        return self.load_seconds < LOAD_GATE_SECONDS

    def stream(self, messages: Sequence[dict[str, str]], *, max_tokens: int = 128) -> Iterator[str]:
        """The answer's text pieces as the model writes them."""
        chunks = self._llama.create_chat_completion(messages=list(messages), max_tokens=max_tokens, stream=True)
        for chunk in chunks:
            piece = chunk["choices"][0].get("delta", {}).get("content")
            if piece:
                yield piece

    def close(self) -> None:
        close = getattr(self._llama, "close", None)
        if close is not None:
            close()
