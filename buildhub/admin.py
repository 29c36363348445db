"""What every app's admin shares."""


class ReadOnlyAdminMixin:
    """Rows the product writes (events, logs, counters, the engine's records): people read
    them and change them only through admin actions that call a service.

    A mixin, so that model pages and inlines share it:
    ``class JobLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin)``.
    """

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
