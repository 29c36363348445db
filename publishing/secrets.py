"""Account secrets encrypted at rest (Fernet: AES-128-CBC with HMAC-SHA256)."""

import base64
import hashlib
import re

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from buildhub.errors import ServiceError
from builds.models import Account
from publishing.models import AccountSecret

NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
MAX_VALUE = 16 * 1024


def fernet() -> Fernet:
    """The server's key for values kept encrypted (account secrets, code signing keys)."""
    key = settings.SECRETS_ENCRYPTION_KEY
    if not key:  # derived from SECRET_KEY: rotating that key makes stored secrets unreadable
        digest = hashlib.sha256(b"buildhub-account-secrets:" + settings.SECRET_KEY.encode())
        key = base64.urlsafe_b64encode(digest.digest()).decode()
    return Fernet(key)


def set_secret(account: Account, name: str, value: str) -> AccountSecret:
    if not NAME.match(name or ""):
        raise ServiceError(
            "Secret names are upper case letters, digits and underscores, like EXPO_TOKEN.",
            fields={"name": "invalid"},
        )
    if not value or len(value) > MAX_VALUE:
        raise ServiceError("A secret's value is 1 byte to 16 KB.", fields={"value": "invalid"})
    secret, _ = AccountSecret.objects.update_or_create(
        account=account,
        name=name,
        defaults={"value_encrypted": fernet().encrypt(value.encode())},
    )
    return secret


def account_secrets(account: Account) -> dict[str, str]:
    """The account's secrets in clear, for a build's environment (never for logs)."""
    box = fernet()
    values = {}
    for name, token in AccountSecret.objects.filter(account=account).values_list(
        "name", "value_encrypted"
    ):
        try:
            values[name] = box.decrypt(bytes(token)).decode()
        except InvalidToken:
            raise ServiceError(
                f"The secret {name} cannot be decrypted with this server's key; set it again.",
                code="secret_unreadable",
                status=409,
            ) from None
    return values


def delete_secret(account: Account, name: str) -> bool:
    return bool(AccountSecret.objects.filter(account=account, name=name).delete()[0])
