from rest_framework import permissions

from builds.models import ApiToken


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
