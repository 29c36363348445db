from rest_framework import viewsets

from builds.api.permissions import caller_account
from builds.api.serializers import AccountSerializer
from builds.choices import TokenScope
from builds.models import Account


class AccountViewSet(viewsets.ReadOnlyModelViewSet):
    """The caller's account with its effective limits and this month's usage."""

    serializer_class = AccountSerializer
    required_scope = TokenScope.BUILDS_READ
    lookup_field = "slug"

    def get_queryset(self):
        accounts = Account.objects.select_related("enterprise_limit").prefetch_related(
            "timeout_addons"
        )
        account = caller_account(self.request)
        return accounts if account is None else accounts.filter(pk=account.pk)
