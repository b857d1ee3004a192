"""Hybrid decision engine: request features -> pure policy -> decision with reasons; fallback; breakers."""
