"""Authentication, API keys, request checks (injection, PII) and limits."""
