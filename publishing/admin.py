from django.contrib import admin

from publishing.models import App


@admin.register(App)
class AppAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "account", "runtime_version", "created_at"]
    list_select_related = ["account"]
    search_fields = ["name", "slug", "account__slug", "app_key"]
    readonly_fields = ["app_key", "created_at"]
    autocomplete_fields = ["account"]
