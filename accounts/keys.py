"""API key format and hashing (no framework imports: the DRF auth class loads early)."""

import hashlib
import secrets

KEY_PREFIX = "osk_"


def api_key_generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()
