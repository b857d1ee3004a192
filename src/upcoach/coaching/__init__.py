"""Coaching features on top of the local model: suggestion chips, the offline strategies library and its bundle."""
