"""Tokens made before the ``accounts`` app (DRF's authtoken, which kept them in plaintext)
keep working: each becomes an ApiToken holding its digest, and the plaintext rows are deleted.
DRF's authtoken is no longer installed, so its table is read with SQL when it exists."""

import hashlib

from django.db import migrations

LEGACY_TABLE = "authtoken_token"


def digests_of_drf_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("accounts", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id FROM {LEGACY_TABLE}")
        for key, user_id in cursor.fetchall():
            ApiToken.objects.update_or_create(
                user_id=user_id,
                defaults={"digest": hashlib.sha256(key.encode()).hexdigest(), "prefix": key[:10]},
            )
        cursor.execute(f"DELETE FROM {LEGACY_TABLE}")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(digests_of_drf_tokens, migrations.RunPython.noop)]
