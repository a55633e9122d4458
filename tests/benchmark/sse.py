"""Builders of OpenAI-style chat completion stream chunks for the tests."""

import json


def event(payload) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return b"data: " + text.encode() + b"\n\n"


def role_chunk() -> dict:
    return {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}


def content_chunk(text: str, field: str = "content") -> dict:
    return {"choices": [{"index": 0, "delta": {field: text}, "finish_reason": None}]}


def finish_chunk(reason: str = "length") -> dict:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


def usage_chunk(prompt: int, completion: int) -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {"choices": [], "usage": usage}


DONE = b"data: [DONE]\n\n"
