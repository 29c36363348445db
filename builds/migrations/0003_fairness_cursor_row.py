from django.db import migrations


def create_cursor(apps, schema_editor):
    apps.get_model("builds", "FairnessCursor").objects.get_or_create(pk=1, defaults={"position": 0})


class Migration(migrations.Migration):
    dependencies = [("builds", "0002_jobs")]

    operations = [migrations.RunPython(create_cursor, migrations.RunPython.noop)]
