from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


def unicode_lower_on_sqlite(sender, connection, **kwargs) -> None:
    """SQLite's own ``lower()`` folds ASCII letters only: a search for "émile" would miss
    "Émile". Postgres's folds every script; this makes SQLite's agree."""
    if connection.vendor == "sqlite":
        connection.connection.create_function("lower", 1, _lower, deterministic=True)


class AgentsConfig(AppConfig):
    name = "agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        connection_created.connect(unicode_lower_on_sqlite, dispatch_uid="lap-unicode-lower")
