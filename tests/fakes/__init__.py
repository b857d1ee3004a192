"""Fakes of our own that stand in for remote peers in tests (real HTTP on loopback, never the internet)."""
