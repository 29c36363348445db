from rest_framework import authentication, exceptions

from buildhub import logs
from builds.services import TokenRejected, authenticate_token


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer bh_...``: the request acts for the token's account."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, value = header.partition(" ")
        if keyword.lower() != self.keyword.lower():
            return None
        value = value.strip()
        if not value or " " in value:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        return self.authenticate_credentials(value)

    @staticmethod
    def authenticate_credentials(value: str):
        """(user, token) for a bearer value, or AuthenticationFailed saying why."""
        try:
            token = authenticate_token(value)
        except TokenRejected as rejected:
            raise exceptions.AuthenticationFailed(rejected.message) from None
        logs.bind(account_id=token.account_id)  # this request's log lines name the account
        return TokenUser(token), token

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'


class TokenUser:
    """The caller behind an API token: authenticated, acting for exactly one account."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, token):
        self.token = token
        self.account = token.account

    def __str__(self):
        return f"token {self.token.key_id} of {self.account.slug}"
