"""OpenAPI schema post-processing shared by every app."""

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every refusal of the API: a stable code, a message for people, and for "
    "invalid input the fields at fault.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "example": "not_found"},
                "message": {"type": "string", "example": "Not found."},
                "fields": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "Invalid input: a message (or nested messages) per field.",
                },
            },
            "required": ["code", "message"],
            "additionalProperties": True,
        }
    },
    "required": ["error"],
}

_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}

_TOKEN_ERRORS = {
    "401": "No credentials, or a malformed, unknown, expired or revoked API token.",
    "403": "The token lacks this endpoint's scope, or the account may not do this.",
    "429": "Too many requests; Retry-After says when to come back.",
}


def document_errors(result, generator, request, public):
    """Give every operation the error shape for its refusals.

    Each operation keeps the statuses its view names and gets 401/403/429 when it takes an
    API token, plus ``4XX`` for any other refusal (invalid input, not found, conflict, too
    large): all are ``{"error": {"code", "message", "fields"?}}``, so a client (and the
    schema-driven tests) can rely on one shape.
    """
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for item in result.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            takes_token = any("ApiToken" in option for option in operation.get("security", []))
            if takes_token:
                for status, description in _TOKEN_ERRORS.items():
                    responses.setdefault(status, {"description": description})
            responses.setdefault("4XX", {"description": "Refused: see the error's code."})
            for status, response in responses.items():
                if status.startswith("4") and "content" not in response:
                    response["content"] = _ERROR_CONTENT
    return result
