"""Phones: registration with a key of their own (revocable), offline outbox sync, on-device usage counts (#19)."""
