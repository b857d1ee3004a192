"""UpCoach AI: privacy-first hybrid local/cloud LLM backend for coaching."""

__version__ = "0.1.0"
