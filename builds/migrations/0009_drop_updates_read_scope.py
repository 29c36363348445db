from django.db import migrations

DROPPED = "updates:read"


def drop_updates_read(apps, schema_editor):
    """`updates:read` never guarded an endpoint (devices check with the app key), so tokens
    lose nothing by dropping it; kept, it would fail the token's validation on every edit."""
    ApiToken = apps.get_model("builds", "ApiToken")
    for token in ApiToken.objects.only("pk", "scopes").iterator():
        if DROPPED in (token.scopes or []):
            token.scopes = [scope for scope in token.scopes if scope != DROPPED]
            token.save(update_fields=["scopes"])


class Migration(migrations.Migration):
    dependencies = [("builds", "0008_worker_sandbox_mode")]

    operations = [migrations.RunPython(drop_updates_read, migrations.RunPython.noop)]
