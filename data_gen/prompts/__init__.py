"""Versioned prompt templates of the six stages (prompts.yaml beside this file)."""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import yaml

TEMPLATES_FILE = Path(__file__).resolve().parent / "prompts.yaml"
STAGES = ("characters", "utterances", "labels", "context", "cleaning", "rewriting")


@lru_cache(maxsize=1)
def templates() -> dict:
    return yaml.safe_load(TEMPLATES_FILE.read_text(encoding="utf-8"))


PROMPT_VERSION: str = str(templates()["version"])
# A content hash too, so an edited template without a version bump is still traceable.
PROMPT_SHA256: str = hashlib.sha256(TEMPLATES_FILE.read_bytes()).hexdigest()


def render(stage: str, answer_mode: str, **fields) -> tuple[dict, ...]:
    """Chat messages (system + user) for one stage and answer mode ('free' or 'json')."""
    t = templates()
    spec = t["stages"][stage]
    user = spec["user"].format(answer_format=spec[answer_mode], **fields)
    return ({"role": "system", "content": t["system"]}, {"role": "user", "content": user})
