"""Settings, read once from the environment.

With nothing set this is the embedded default: SQLite, the in-memory channel
layer, the django-q2 ORM broker and the local sandbox driver, with keys
generated into ``LAP_HOME``. Production differs only through environment values.
"""

from __future__ import annotations

from pathlib import Path

import environ

from lapsite.state import ensure_home, generated_keys, private_database

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

LAP_HOME = ensure_home(Path(env.str("LAP_HOME", default=str(BASE_DIR / ".lap-state"))).resolve())
_generated = generated_keys(LAP_HOME)


def _key(name: str) -> str:
    return env.str(name, default=_generated[name])


DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = _key("DJANGO_SECRET_KEY")
LAP_MASTER_KEY = _key("LAP_MASTER_KEY")
# Newest first: encrypt with the first, decrypt with any (rotation).
LAP_ENCRYPTION_KEYS = env.list("LAP_ENCRYPTION_KEYS", default=[_generated["LAP_ENCRYPTION_KEYS"]])

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "accounts",
    "agents",
    "sandboxes",
    "terminals",
    "vault",
    "pool",
    "webui",
]

MIDDLEWARE = [
    "lapsite.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "lapsite.urls"
ASGI_APPLICATION = "lapsite.asgi.application"
WSGI_APPLICATION = "lapsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{LAP_HOME / 'lap.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        private_database(Path(DATABASES["default"]["NAME"]))
    # Several processes (daphne, the q cluster) share the file: wait this many seconds for a
    # lock, then fail (the API answers 503). WAL lets readers run beside the one writer, and
    # with synchronous=NORMAL a commit is an append to the log with no fsync (durable across a
    # process crash; the last commits can be lost only with the machine) — a warm claim is a
    # dozen small commits.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": env.int("LAP_SQLITE_TIMEOUT", default=20),
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        }
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database behind a network partition swallows the connect: without a limit each request
    # would hold a worker thread for the kernel's two-minute SYN timeout instead of a 503.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("LAP_DB_CONNECT_TIMEOUT", default=5)
    )

REDIS_URL = env.str("REDIS_URL", default="")
# Names this deployment's task queue and channel-layer keys: deployments sharing one Redis
# must differ, or each would run the other's tasks against the wrong database.
LAP_INSTANCE = env.str("LAP_INSTANCE", default="lap")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{LAP_INSTANCE}:asgi"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

Q_CLUSTER = {
    "name": LAP_INSTANCE,
    "workers": env.int("LAP_WORKERS", default=2),
    "timeout": 300,
    "retry": 360,
    "max_attempts": 1,
    "catch_up": False,
    "poll": 0.05,  # ORM broker: seconds between queue polls (bring-up waits for the next one)
    "ack_failures": True,
    **({"redis": REDIS_URL} if REDIS_URL else {"orm": "default"}),
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# daphne serves no files itself: WhiteNoise serves static assets (admin, Swagger UI) straight
# from the installed apps, so there is no collectstatic step and no STATIC_ROOT.
WHITENOISE_USE_FINDERS = True
# The web UI's own assets, and the front-end libraries `make` installs from npm (package-lock.json).
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/xterm", BASE_DIR / "node_modules/@xterm/xterm"),
    ("vendor/xterm-addon-fit", BASE_DIR / "node_modules/@xterm/addon-fit"),
    ("vendor/htmx", BASE_DIR / "node_modules/htmx.org/dist"),
]
LOGIN_URL = "webui:login"
LOGIN_REDIRECT_URL = "webui:home"
LOGOUT_REDIRECT_URL = "webui:login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "lapsite.auth.MasterKeyAuthentication",
        "lapsite.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "lapsite.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # A JSON API (as LAP clients speak it): form bodies cannot carry its maps and lists, and a
    # ?format= override only turned unknown values into 404s; Accept negotiates instead.
    "DEFAULT_PARSER_CLASSES": ["lapsite.parsers.JSONParser"],
    # Answers are JSON too, with no browsable API; also to an Accept naming only other types
    # (a browser's text/html): JSON, not a 406.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "lapsite.negotiation.FallbackNegotiation",
    "URL_FORMAT_OVERRIDE": None,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "LAP — agent platform API",
    "DESCRIPTION": "Compatible with LiteLLM Agent Platform clients.",
    "VERSION": "1.0.0",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",  # the default, kept
        "lapsite.schema.document_body_errors",
    ],
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # Swagger UI's assets are served from the package, never from a CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Sandboxes
LAP_SANDBOX_DRIVER = env.str("LAP_SANDBOX_DRIVER", default="local")
LAP_IDLE_TIMEOUT = env.int("LAP_IDLE_TIMEOUT", default=24 * 60 * 60)  # seconds
LAP_CREATING_TIMEOUT = env.int("LAP_CREATING_TIMEOUT", default=300)  # seconds
LAP_TTY_TOKEN_TTL = env.int("LAP_TTY_TOKEN_TTL", default=24 * 60 * 60)  # seconds
# Warm pool: at most this many warm + provisioning sandboxes over all harnesses, and a warm
# sandbox older than LAP_POOL_MAX_AGE seconds is recycled (destroyed and replaced).
LAP_POOL_MAX = env.int("LAP_POOL_MAX", default=10)
LAP_POOL_MAX_AGE = env.int("LAP_POOL_MAX_AGE", default=60 * 60)  # seconds
# A PEM bundle the vault sidecars trust for upstream TLS besides the system CAs (tests: a
# trustme CA for local HTTPS servers). Verification of upstreams is always on.
LAP_VAULT_UPSTREAM_CA = env.str("LAP_VAULT_UPSTREAM_CA", default="")
# Kubernetes driver (LAP_SANDBOX_DRIVER=kubernetes; docs/kubernetes.md). Kube config: the
# base64 kubeconfig when set, else the in-cluster service account, else KUBECONFIG.
LAP_K8S_NAMESPACE = env.str("LAP_K8S_NAMESPACE", default="lap-sandboxes")
LAP_K8S_KUBECONFIG_B64 = env.str("LAP_K8S_KUBECONFIG_B64", default="")
LAP_K8S_IMAGE_REGISTRY = env.str("LAP_K8S_IMAGE_REGISTRY", default="lap")
LAP_K8S_IMAGE_TAG = env.str("LAP_K8S_IMAGE_TAG", default="0.1.0")
LAP_K8S_RUNTIME_CLASS = env.str("LAP_K8S_RUNTIME_CLASS", default="")
LAP_K8S_NODE_SELECTOR = env.dict("LAP_K8S_NODE_SELECTOR", default={})  # k=v,k2=v2
LAP_K8S_PRIORITY_CLASS_ACTIVE = env.str(
    "LAP_K8S_PRIORITY_CLASS_ACTIVE", default="lap-sandbox-active"
)
LAP_K8S_PRIORITY_CLASS_WARM = env.str("LAP_K8S_PRIORITY_CLASS_WARM", default="lap-sandbox-warm")
# Seconds a sandbox pod may be unschedulable before its session fails (preemption and
# cluster autoscalers make short spells normal).
LAP_K8S_UNSCHEDULABLE_GRACE = env.int("LAP_K8S_UNSCHEDULABLE_GRACE", default=120)
# Extra CIDRs allowed to reach sandbox pods besides the platform's own pods (development).
LAP_K8S_INGRESS_CIDRS = env.list("LAP_K8S_INGRESS_CIDRS", default=[])
# The harness tools directory (`make harnesses`), bound read-only into local sandboxes.
LAP_TOOLS_DIR = env.str("LAP_TOOLS_DIR", default=str(BASE_DIR / ".lap-tools"))
LITELLM_API_BASE = env.str("LITELLM_API_BASE", default="")
LITELLM_API_KEY = env.str("LITELLM_API_KEY", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LAP_LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        # httpx logs every request at INFO: each runner and sidecar call (a health poll every
        # 100 ms while a sandbox starts) would be a line of the platform's log.
        "httpx": {"level": "WARNING"},
    },
}
