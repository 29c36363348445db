from rest_framework import permissions

from buildhub.errors import ServiceError
from builds.models import Account, ApiToken
from builds.services import actor_name


class HasTokenScope(permissions.BasePermission):
    """Staff (admin session) may do anything; a token needs the scope its view asks for.

    Views name scopes per action: ``required_scopes = {"list": "builds:read", ...}``, or one
    ``required_scope`` for all; a view naming neither accepts any valid token.
    """

    message = "This API token lacks the scope this endpoint needs."

    def has_permission(self, request, view):
        user = request.user
        if user is None or not user.is_authenticated:
            return False
        if getattr(user, "is_staff", False):
            return True
        token = request.auth
        if not isinstance(token, ApiToken):
            return False
        scope = required_scope(view)
        if scope and not token.has_scope(scope):
            self.message = f"This API token lacks the '{scope}' scope."
            return False
        return True


def required_scope(view) -> str | None:
    scopes = getattr(view, "required_scopes", None)
    if scopes:
        action = getattr(view, "action", None) or view.request.method.lower()
        return scopes.get(action)
    return getattr(view, "required_scope", None)


def caller_account(request):
    """The account an API token acts for; None for staff, who see every account."""
    token = request.auth
    return token.account if isinstance(token, ApiToken) else None


def request_actor(request) -> str:
    """Who a request acts as, as a job's log names them (``builds.services.actor_name``)."""
    token = request.auth
    return actor_name(request.user, token if isinstance(token, ApiToken) else None)


def request_account(request) -> Account:
    """The account a request acts for: the token's, or for staff the one they name."""
    account = caller_account(request)
    if account is not None:
        return account
    slug = request.query_params.get("account") or (
        request.data.get("account") if hasattr(request.data, "get") else None
    )
    if not slug:
        raise ServiceError(
            "Staff requests name the account: ?account=<slug>.", fields={"account": "required"}
        )
    account = Account.objects.filter(slug=slug).first()
    if account is None:
        raise ServiceError("No such account.", code="not_found", status=404)
    return account
