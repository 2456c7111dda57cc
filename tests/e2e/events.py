"""Events as Tamma's workers send them to the ingest API, for the end-to-end tests."""

from __future__ import annotations


def ai_request(event_id: str, model: str, provider: str = "anthropic") -> dict:
    """One finished AI request: 800 input and 200 output tokens, 1.5 s."""
    return {
        "type": "ai_request",
        "event_id": event_id,
        "provider": provider,
        "model": model,
        "request_type": "chat",
        "outcome": "success",
        "duration_seconds": 1.5,
        "tokens": {"input": 800, "output": 200},
    }


def ai_requests(model: str, first: int, size: int) -> list[dict]:
    """``size`` AI requests of ``model`` with the ids ``{model}-{first:06d}`` onwards."""
    return [ai_request(f"{model}-{n:06d}", model) for n in range(first, first + size)]
