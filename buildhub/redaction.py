"""Secrets taken out of text before it is stored or logged: job log lines, process logs."""

import re

REDACTED = "[REDACTED]"
_PATTERNS = [
    re.compile(r"bh_[0-9a-f]{12}_[A-Za-z0-9_\-]{16,}"),  # our API tokens
    re.compile(r"(?i)(authorization\s*[:=]\s*)(bearer|basic|token)?\s*\S+"),
    re.compile(r"(?i)\b((?:[a-z0-9]+_)?(?:token|secret|password|api_?key)\s*[=:]\s*)\S+"),
]


def redact(message: str, secrets: frozenset[str] | set[str] = frozenset()) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and len(secret) >= 4:
            message = message.replace(secret, REDACTED)
    message = _PATTERNS[0].sub(REDACTED, message)
    message = _PATTERNS[1].sub(lambda m: f"{m.group(1)}{REDACTED}", message)
    return _PATTERNS[2].sub(lambda m: f"{m.group(1)}{REDACTED}", message)
