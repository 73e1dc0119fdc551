"""Settings of the example project: a tiny multi-tenant product plus a sandbox "Apicbase".

Everything comes from the environment (or a ``.env`` file beside manage.py); the defaults run
offline on SQLite. Set ``APICBASE_SANDBOX=false`` and the ``APICBASE_CLIENT_*`` variables to talk
to the real Apicbase instead of the sandbox.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import environ

from example_project.site_url import binds_every_interface, site_host, site_url

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional; missing is fine

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="example-project-not-secret")
# Where this project is reachable: the sandbox provider's URLs are built from it. Unset, it is
# where `runserver` (or `sandbox`) was told to listen: any port works without configuration.
SITE_URL = site_url(env("SITE_URL", default=None), sys.argv)
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS",
    default=[
        "127.0.0.1",
        "localhost",
        "[::1]",
        "testserver",
        site_host(SITE_URL),
        # `runserver 0.0.0.0:8000` asks to be reached from elsewhere, under any name.
        *(["*"] if binds_every_interface(sys.argv) else []),
    ],
)
# Not Django's default names: the sandbox (`manage.py sandbox`) runs on the same host as the
# reader's own project, and browsers share cookies between ports. Logging in at the sandbox
# must not log the reader out of their site (and lose the authorization in progress).
SESSION_COOKIE_NAME = "example_sessionid"
CSRF_COOKIE_NAME = "example_csrftoken"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "oauth2_provider",
    "oauth_connect",
    "example_project.tenants",
    "example_project.sandbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "example_project" / "templates"],
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
WSGI_APPLICATION = "example_project.wsgi.application"
ASGI_APPLICATION = "example_project.asgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Wait for a busy database instead of failing at once; threads of runserver share the file.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # Writers queue up at BEGIN instead of failing mid-transaction with "database is locked"
    # (the sandbox's token endpoint reads then writes; several refreshes hit it at once).
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    # Tests use a file, not :memory:, so a live server's threads each get a real connection.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"oauth_connect_test_{os.getpid()}.sqlite3")
    }

if env.int("DATABASE_POOL_SIZE", default=0) and "postgresql" in DATABASES["default"]["ENGINE"]:
    # Under ASGI, Django runs each request's ORM work on a thread of that request's own, and
    # each thread holds a database connection until the request ends: 200 requests in flight
    # would be 200 connections, twice PostgreSQL's default max_connections. Django's pool
    # (psycopg_pool) caps them; requests beyond the cap wait for one to come back.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env.int("DATABASE_POOL_SIZE"),
        "timeout": 60,
    }

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "oauth_connect:list"
LOGOUT_REDIRECT_URL = "login"

# --- oauth_connect ------------------------------------------------------------------------------

OAUTH_CONNECT_TENANT_MODEL = "tenants.Organisation"

# The demo key is public: set OAUTH_CONNECT_KEYS (comma-separated Fernet keys) anywhere real.
DEMO_ENCRYPTION_KEY = "gxU4Em12pHLM4owjeSDxH9022GVjWpQGZIyofQ1YnMk="

if env.bool("APICBASE_SANDBOX", default=True):
    APICBASE = {
        "AUTHORIZE_URL": f"{SITE_URL}/sandbox/o/authorize/",
        "TOKEN_URL": f"{SITE_URL}/sandbox/o/token/",
        "REVOKE_URL": f"{SITE_URL}/sandbox/o/revoke_token/",
        "INTROSPECT_URL": f"{SITE_URL}/sandbox/o/introspect/",
        "API_URL": f"{SITE_URL}/sandbox/api/v1/",
        "CLIENT_ID": "sandbox-apicbase-client",
        "CLIENT_SECRET": "sandbox-apicbase-secret",
    }
else:
    APICBASE = {
        "CLIENT_ID": env("APICBASE_CLIENT_ID"),
        "CLIENT_SECRET": env("APICBASE_CLIENT_SECRET"),
    }

# Custobar and TeleTracker take a username and password; the sandbox fakes both APIs.
CUSTOBAR = (
    {"BASE_URL": f"{SITE_URL}/sandbox/custobar/{{company}}/"}
    if env.bool("CUSTOBAR_SANDBOX", default=True)
    else {}
)
TELETRACKER = (
    {
        "API_URL": f"{SITE_URL}/sandbox/teletracker/",
        "LOGIN_URL": f"{SITE_URL}/sandbox/teletracker/auth/login",
        "REFRESH_URL": f"{SITE_URL}/sandbox/teletracker/auth/refresh",
    }
    if env.bool("TELETRACKER_SANDBOX", default=True)
    else {}
)

OAUTH_CONNECT = {
    "ENCRYPTION_KEYS": env.list("OAUTH_CONNECT_KEYS", default=[DEMO_ENCRYPTION_KEY]),
    "TENANT_RESOLVER": "example_project.tenants.resolvers.current_organisation",
    "BASE_TEMPLATE": "example_base.html",
    "PROVIDERS": {
        "apicbase": APICBASE,
        # A second OAuth2 API configured with settings only (no provider class): the sandbox
        # again, under another client, with HTTP basic client authentication.
        "acme": {
            "NAME": "Acme (generic OAuth2)",
            "AUTHORIZE_URL": f"{SITE_URL}/sandbox/o/authorize/",
            "TOKEN_URL": f"{SITE_URL}/sandbox/o/token/",
            "REVOKE_URL": f"{SITE_URL}/sandbox/o/revoke_token/",
            "API_URL": f"{SITE_URL}/sandbox/api/v1/",
            "CLIENT_ID": "sandbox-acme-client",
            "CLIENT_SECRET": "sandbox-acme-secret",
            "CLIENT_AUTH": "basic",
            "SCOPES": ["accounts"],
        },
        "custobar": CUSTOBAR,
        "teletracker": TELETRACKER,
    },
}

# --- the sandbox authorization server (django-oauth-toolkit), posing as Apicbase -----------------

OAUTH2_PROVIDER = {
    "SCOPES": {"accounts": "Read your account", "library": "Read your library"},
    "DEFAULT_SCOPES": ["accounts"],
    # Apicbase's access tokens live a week (its API documentation); override to watch refreshes.
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("SANDBOX_TOKEN_SECONDS", default=7 * 24 * 3600),
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    # Like Apicbase: every refresh rotates the refresh token and the old one is dead.
    "ROTATE_REFRESH_TOKEN": True,
    "PKCE_REQUIRED": True,
    # Also accepts the project's own callback on whatever port runserver was given.
    "OAUTH2_VALIDATOR_CLASS": "example_project.sandbox.validator.SandboxValidator",
}
# The fake TeleTracker's token lifetime (the real one is an hour); lower it to watch refreshes.
SANDBOX_TELETRACKER_TOKEN_SECONDS = env.int("SANDBOX_TELETRACKER_TOKEN_SECONDS", default=3600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "oauth_connect": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")}
    },
}
