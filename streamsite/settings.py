"""streamsite settings, read from the environment (and an optional .env file).

A bad value stops start-up with the variable's name: see streams/engine/config.py.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from streams.core.database import with_timeouts
from streams.core.descriptors import reserve_setting, soft_limit
from streams.core.env import env_bool, env_choice, env_int
from streams.engine.config import load_redis_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Django basics -------------------------------------------------------------------------
DEBUG = env_bool(env, "DEBUG", False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set (and DEBUG is off): set it in the environment or in .env "
            "(SECRET_KEY=<50 random characters>; ./dev.sh serve writes a development .env)"
        )
    SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Browser pages that may open a WebSocket besides this server's own origin (a handshake without
# Origin, a device's, always may): https://app.example.com, https://*.example.com, or *.
# Independent of ALLOWED_HOSTS; checked at start-up and per handshake (streamsite/routing.py).
WEBSOCKET_ALLOWED_ORIGINS = env.list("WEBSOCKET_ALLOWED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "streamsite.apps.StreamsiteAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic",  # its configuration checks
    "django.contrib.staticfiles",
    "channels",
    "django_prometheus",
    "ninja",  # serves Swagger UI's files from this server (no CDN)
    "axes",  # admin login throttling (AXES_* below)
    "csp",  # Content-Security-Policy (CONTENT_SECURITY_POLICY below)
    "streams",
    "workouts",
    "monitoring",
]

# Django's standard stack serves the admin; the API, health and streaming paths are served by a
# second handler with only async-native middleware: see streamsite/server/handlers.py.
MIDDLEWARE = [
    "streamsite.middleware.PrometheusBefore",
    "streamsite.middleware.ApiShapeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # Static files (the admin's, Swagger UI's), compressed and with far-future caching for
    # hashed names; async-native. /static/ is on the standard handler.
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last of Django's: a locked-out login answers 429 (the lean stack serves no login).
    "axes.middleware.AxesMiddleware",
    "streamsite.middleware.DatabaseUnavailableMiddleware",  # 503, not 500, while the database is away
    "streamsite.middleware.RedisUnavailableMiddleware",  # a styled 503 on pages while Redis is away
    "streamsite.middleware.PrometheusAfter",
]
LEAN_PATH_PREFIXES = ["/api/", "/health/", "/metrics", "/live/"]
LEAN_MIDDLEWARE = [
    "streamsite.middleware.PrometheusBefore",
    "streamsite.middleware.LeanGuardMiddleware",
    "streamsite.middleware.ApiShapeMiddleware",
    "streamsite.middleware.DatabaseUnavailableMiddleware",
    "streamsite.middleware.RedisUnavailableMiddleware",
    "streamsite.middleware.PrometheusAfter",
]

# --- HTTPS and security headers (secure by default when DEBUG is off) -----------------------
# Behind a TLS-terminating proxy, list it in TRUSTED_PROXIES: its X-Forwarded-Proto then
# counts (SECURE_PROXY_SSL_HEADER), and no other peer's does (streamsite/server/guards.py).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool(env, "SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]  # probes and scrapers speak plain HTTP by IP
SECURE_HSTS_SECONDS = env_int(env, "SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool(env, "SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool(env, "SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool(env, "SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool(env, "CSRF_COOKIE_SECURE", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp 4): on the admin (standard stack) and on the lean stack's
# HTML pages (/live/, Swagger UI at /api/docs; streamsite/middleware.py). Scripts only from this
# origin or with the response's nonce (the pages' inline scripts carry it); styles from this
# origin and inline (the admin's and Swagger UI's style attributes); no plugins, no framing.
from datetime import timedelta as _timedelta  # noqa: E402

from csp.constants import NONCE, NONE, SELF  # noqa: E402

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],  # the pages' EventSource / WebSocket, Swagger UI's fetches
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- Admin login throttling (django-axes) -------------------------------------------------------
# AXES_FAILURE_LIMIT failed logins for one username from one client address (after
# TRUSTED_PROXIES) lock that pair out for AXES_COOLOFF_MINUTES: the login answers 429.
AUTHENTICATION_BACKENDS = [
    "streamsite.login_throttle.AxesLockoutBackend",  # axes' lockout check, on the async login too
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int(env, "AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_MINUTES = env_int(env, "AXES_COOLOFF_MINUTES", 15, minimum=1)
AXES_COOLOFF_TIME = _timedelta(minutes=AXES_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

ROOT_URLCONF = "streamsite.urls"
ASGI_APPLICATION = "streamsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The site's frame (base.html) and its error pages (400, 404, 503) are wiring: streamsite's.
        "DIRS": [BASE_DIR / "streamsite" / "templates"],
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

# --- Database ------------------------------------------------------------------------------
# SQLite by default; postgres://... uses psycopg 3. No CONN_MAX_AGE: persistent connections
# are discouraged under ASGI (each async task would pin one).
try:
    DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
except (ImproperlyConfigured, ValueError, KeyError) as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
# django-prometheus' database metrics (django_db_*): its wrappers of Django's own backends.
PROMETHEUS_DB_ENGINES = {
    f"django.db.backends.{vendor}": f"django_prometheus.db.backends.{vendor}" for vendor in ("sqlite3", "postgresql")
}
for _db in DATABASES.values():
    _db["ENGINE"] = PROMETHEUS_DB_ENGINES.get(_db["ENGINE"], _db["ENGINE"])
# Every connection gives up instead of hanging (streams/core/database.py): a database that stops
# answering costs a request at most these, and the identity cache carries known callers meanwhile.
DATABASE_CONNECT_TIMEOUT_MS = env_int(env, "DATABASE_CONNECT_TIMEOUT", 5000, minimum=1)
DATABASE_STATEMENT_TIMEOUT_MS = env_int(env, "DATABASE_STATEMENT_TIMEOUT", 10000, minimum=1)
DATABASES = {
    alias: with_timeouts(db, connect_ms=DATABASE_CONNECT_TIMEOUT_MS, statement_ms=DATABASE_STATEMENT_TIMEOUT_MS)
    for alias, db in DATABASES.items()
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
STATICFILES_DIRS = [BASE_DIR / "streamsite" / "static"]  # the site's stylesheet (site/site.css)
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
# collectstatic (the Dockerfile, ./dev.sh serve) writes hashed, gzip- and brotli-compressed
# copies that servestatic serves with far-future caching, with DEBUG too (streamsite/storage.py).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "streamsite.storage.StaticStorage"},
}

# Request bodies: 1 MiB for the streams API (STREAMS_MAX_BODY), more for workouts, whose
# JSON samples reach ~12 MB at the 200,000-sample limit. Both answer 413 above the limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int(env, "DATA_UPLOAD_MAX_MEMORY_SIZE", 32 * 1024 * 1024, minimum=1)
STREAMS_MAX_BODY = env_int(env, "STREAMS_MAX_BODY", 1024 * 1024, minimum=1)

WORKOUTS_MAX_UPLOAD = env_int(env, "WORKOUTS_MAX_UPLOAD", 16 * 1024 * 1024, minimum=1)
# Worker processes that parse, validate and encode workout bodies and FIT files off the event
# loop (streams/core/offload.py). 2, so that one user's slow upload (at most
# OFFLOAD_JOBS_PER_USER jobs each) leaves a worker for everyone else; niced below the server.
OFFLOAD_PROCESSES = env_int(env, "OFFLOAD_PROCESSES", 2, minimum=1)
OFFLOAD_JOBS_PER_USER = env_int(env, "OFFLOAD_JOBS_PER_USER", 1, minimum=1)  # in flight per server process (429 above)
OFFLOAD_JOB_TIMEOUT_MS = env_int(env, "OFFLOAD_JOB_TIMEOUT", 30000, minimum=100)  # CPU time per job (422 above)
OFFLOAD_NICE = env_int(env, "OFFLOAD_NICE", 10)  # the workers' CPU priority below the server's (0-19)
if OFFLOAD_NICE > 19:
    raise ImproperlyConfigured(f"OFFLOAD_NICE={OFFLOAD_NICE} must be between 0 and 19")
# The HTTP edge (streamsite/server/http.py, the production command's protocol): a request's
# head (414 / 431 above) and how long a head, a stalled body and an idle keep-alive may take.
# The widest legitimate request, a 50-stream SSE with its resume ids in the URL, is ~9 KB.
HTTP_MAX_REQUEST_LINE = env_int(env, "HTTP_MAX_REQUEST_LINE", 16 * 1024, minimum=256)
HTTP_MAX_HEADER_BYTES = env_int(env, "HTTP_MAX_HEADER_BYTES", 32 * 1024, minimum=1024)
HTTP_MAX_HEADERS = env_int(env, "HTTP_MAX_HEADERS", 100, minimum=10)
HTTP_HEADER_TIMEOUT_MS = env_int(env, "HTTP_HEADER_TIMEOUT", 10000, minimum=100)
HTTP_BODY_TIMEOUT_MS = env_int(env, "HTTP_BODY_TIMEOUT", 30000, minimum=100)
HTTP_KEEP_ALIVE_TIMEOUT_MS = env_int(env, "HTTP_KEEP_ALIVE_TIMEOUT", 5000, minimum=100)

# --- File descriptors ----------------------------------------------------------------------
# Descriptors kept free of long-lived connections (streams/core/descriptors.py): new follows get
# 503 at the soft limit (ulimit -n) minus FD_RESERVE, other requests at half the reserve left,
# so /health/ and /metrics answer from the rest. Default 64 (a quarter of a limit under 256);
# 0 keeps none; half the limit or more stops start-up.
FD_RESERVE = reserve_setting(env.str("FD_RESERVE", default=""), soft_limit())

# --- Redis and streams ---------------------------------------------------------------------
REDIS = load_redis_config(env)
# The visibility of a stream created by its first publish (public when true), and whether
# streams nobody owns are readable by everyone.
STREAMS_PUBLIC_READ = env_bool(env, "STREAMS_PUBLIC_READ", DEBUG)
STREAM_MAX_ENTRY_BYTES = env_int(env, "STREAM_MAX_ENTRY_BYTES", 64 * 1024, minimum=1)

# --- Identity ------------------------------------------------------------------------------
# Token and user identities are cached per process this long: a token, user or share
# deactivated anywhere stops working everywhere within it. Open follows re-check access on
# the second clock.
AUTH_CACHE_TTL_MS = env_int(env, "AUTH_CACHE_TTL", 4000)
# While the database cannot be reached, a token or session confirmed by it within this long
# keeps working from the cache (a revocation seen before stays); an unknown one gets 503.
AUTH_OUTAGE_GRACE_MS = env_int(env, "AUTH_OUTAGE_GRACE", 300000)
if AUTH_CACHE_TTL_MS > 5000:
    raise ImproperlyConfigured(f"AUTH_CACHE_TTL={AUTH_CACHE_TTL_MS} must be at most 5000 ms (revocation promise)")
ACCESS_RECHECK_INTERVAL_MS = env_int(env, "ACCESS_RECHECK_INTERVAL", 5000, minimum=100)
if ACCESS_RECHECK_INTERVAL_MS > 6000:
    raise ImproperlyConfigured(f"ACCESS_RECHECK_INTERVAL={ACCESS_RECHECK_INTERVAL_MS} must be at most 6000 ms")
# How long one Redis node may take to answer the re-check's metadata read before its streams
# keep their last copies until the next interval (a failover): it never holds up other nodes.
ACCESS_RECHECK_TIMEOUT_MS = env_int(env, "ACCESS_RECHECK_TIMEOUT", 1000, minimum=10)

# --- Live delivery (hub, SSE, WebSocket) ---------------------------------------------------
STREAM_HUB_KEYS_PER_READER = env_int(env, "STREAM_HUB_KEYS_PER_READER", 1000, minimum=1)
SSE_QUEUE_SIZE = env_int(env, "SSE_QUEUE_SIZE", 1000, minimum=1)
SSE_RETRY_MS = env_int(env, "SSE_RETRY_MS", 2000)
SSE_HEARTBEAT_INTERVAL = env_int(env, "SSE_HEARTBEAT_INTERVAL", 15000, minimum=1)
SSE_MAX_STREAMS = 50
SHUTDOWN_GRACE_MS = env_int(env, "SHUTDOWN_GRACE_MS", 2000)
# Write backpressure (streamsite/server/flow_control.py): what a connection whose client stopped
# reading may hold beyond the socket's buffer, and how long it may stall before it is cut.
LIVE_MAX_BUFFER_BYTES = env_int(env, "LIVE_MAX_BUFFER_BYTES", 1024 * 1024, minimum=1024)
LIVE_STALL_TIMEOUT_MS = env_int(env, "LIVE_STALL_TIMEOUT", 10000, minimum=100)
# Capacity (streams/live/capacity.py): a follow beyond either limit is refused at once (503 / 429).
LIVE_MAX_FOLLOWED_STREAMS = env_int(env, "LIVE_MAX_FOLLOWED_STREAMS", 10000, minimum=1)
LIVE_MAX_CONNECTIONS_PER_USER = env_int(env, "LIVE_MAX_CONNECTIONS_PER_USER", 100, minimum=1)
# Fair shares (streams/live/capacity.py; stream managers are exempt): distinct streams one user
# follows at once (429), and entries a second per API token (a bucket of 10 s of them; 429 with
# Retry-After). Streams per owner: creating one more is a 429 (streams/store/services.py).
LIVE_MAX_FOLLOWED_STREAMS_PER_USER = env_int(env, "LIVE_MAX_FOLLOWED_STREAMS_PER_USER", 200, minimum=1)
PUBLISH_RATE_PER_TOKEN = env_int(env, "PUBLISH_RATE_PER_TOKEN", 1000, minimum=1)
STREAMS_MAX_PER_USER = env_int(env, "STREAMS_MAX_PER_USER", 500, minimum=1)
# The hub's readers on one node: one per STREAM_HUB_KEYS_PER_READER followed streams, plus (on a
# cluster, where one XREAD reads one bucket) up to one more per bucket: they must all fit the
# node's blocking pool, or a reader would wait for a connection that never frees.
_readers_needed = -(-LIVE_MAX_FOLLOWED_STREAMS // STREAM_HUB_KEYS_PER_READER) + REDIS.buckets
if _readers_needed > REDIS.blocking_pool_max:
    raise ImproperlyConfigured(
        f"REDIS_BLOCKING_POOL_MAX={REDIS.blocking_pool_max} is too small for the hub's readers: "
        f"LIVE_MAX_FOLLOWED_STREAMS={LIVE_MAX_FOLLOWED_STREAMS} / STREAM_HUB_KEYS_PER_READER={STREAM_HUB_KEYS_PER_READER}"
        f" + REDIS_BUCKETS={REDIS.buckets} = {_readers_needed}"
    )


# --- Rides (docs/rides.md) -----------------------------------------------------------------
# A ride is stale after RIDE_STALE_AFTER ms without an entry (a dropout: it goes on) and ended
# after RIDE_IDLE_END ms (the ride janitor then writes its end marker). Ended rides become
# workouts (RIDE_AUTO_ARCHIVE); what stays of an archived stream: keep it, or delete its entries.
RIDE_STALE_AFTER_MS = env_int(env, "RIDE_STALE_AFTER", 10000, minimum=1)
RIDE_IDLE_END_MS = env_int(env, "RIDE_IDLE_END", 600000, minimum=1)
if RIDE_IDLE_END_MS <= RIDE_STALE_AFTER_MS:
    raise ImproperlyConfigured(
        f"RIDE_IDLE_END={RIDE_IDLE_END_MS} must be more than RIDE_STALE_AFTER={RIDE_STALE_AFTER_MS} ms"
    )
RIDE_AUTO_ARCHIVE = env_bool(env, "RIDE_AUTO_ARCHIVE", True)
RIDE_ARCHIVED_STREAM = env_choice(env, "RIDE_ARCHIVED_STREAM", "keep", ("keep", "delete"))
# The ride janitor (workouts/rides/janitor.py) runs in each server process unless this is off
# (never in management commands; the test suite starts it where a test asks).
RIDE_JANITOR = env_bool(env, "RIDE_JANITOR", True)
# /ride/'s ?sample_ms= (a sample every N ms of page time, each one second of ride time): a
# clock that runs fast, for tests and demos only; off, the page samples once a second.
RIDE_PAGE_FAST_CLOCK = env_bool(env, "RIDE_PAGE_FAST_CLOCK", False)
# Planned sessions and alerts (docs/rides.md, "Planned sessions"): the band around a step's
# target that counts as on target, and the share of max heart rate that raises hr_high.
PLAN_TOLERANCE_PCT = env_int(env, "PLAN_TOLERANCE_PCT", 5, minimum=0, maximum=50)
ALERT_HR_PCT = env_int(env, "ALERT_HR_PCT", 95, minimum=50, maximum=120)

def _gc_thresholds(raw: str) -> tuple[int, ...] | None:
    """``default`` keeps Python's; else three integers ``gen0,gen1,gen2``."""
    if raw.strip().lower() == "default":
        return None
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ImproperlyConfigured(f"GC_THRESHOLDS={raw!r} must be three positive integers (gen0,gen1,gen2) or 'default'")
    return values


# The server process's garbage collector: see streams/core/gc.py tune_gc().
GC_THRESHOLDS = _gc_thresholds(env.str("GC_THRESHOLDS", default="50000,20,100"))
# With those thresholds Python's own full collections almost never run, so cyclic garbage
# from finished connections would pile up; the server collects (and then freezes the
# survivors) on this clock (0 = never), and unfreezes everything for one deep collection
# every GC_DEEP_COLLECT_INTERVAL (0 = never). See streams/core/gc.py FullCollections.
GC_FULL_COLLECT_INTERVAL_MS = env_int(env, "GC_FULL_COLLECT_INTERVAL", 300000)
GC_DEEP_COLLECT_INTERVAL_MS = env_int(env, "GC_DEEP_COLLECT_INTERVAL", 3600 * 1000)

# --- Monitoring ----------------------------------------------------------------------------
MONITORING_RECENT_SAMPLES = env_int(env, "MONITORING_RECENT_SAMPLES", 100, minimum=1)
MONITORING_TOKEN = env.str("MONITORING_TOKEN", default="")
_DEFAULT_METRICS_CIDRS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
try:
    import ipaddress as _ipaddress

    METRICS_ALLOWED_CIDRS = [
        _ipaddress.ip_network(c.strip()) for c in env.str("METRICS_ALLOWED_CIDRS", default=_DEFAULT_METRICS_CIDRS).split(",") if c.strip()
    ]
except ValueError as _exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_CIDRS is not a list of networks: {_exc}") from None

# Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (streamsite/server/guards.py).
# Run the server without --proxy-headers: these wrappers do it, for trusted peers only.
try:
    TRUSTED_PROXIES = [
        _ipaddress.ip_network(c.strip()) for c in env.str("TRUSTED_PROXIES", default="").split(",") if c.strip()
    ]
except ValueError as _exc:
    raise ImproperlyConfigured(f"TRUSTED_PROXIES is not a list of networks: {_exc}") from None

# --- Channels ------------------------------------------------------------------------------
# No Channels layer: nothing of the service sends through one (deletions travel on the service's
# own Redis stream, streams/live/deletions.py), and channels-redis cannot talk to a Redis Cluster —
# a layer would have been a second Redis for operators to run. get_channel_layer() is None.
CHANNEL_LAYERS: dict = {}

# --- Logging -------------------------------------------------------------------------------
LOG_LEVEL = env_choice(
    env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Out of file descriptors, one line per 10 s with a count instead of a traceback per request.
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain",
                             "filters": ["collapse_out_of_descriptors"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # uvicorn logs each WebSocket handshake's path with its query: ?token= and ?csrf= are
        # redacted (only a filter: uvicorn's own handlers and level stay).
        "uvicorn.error": {"filters": ["redact_query_secrets", "collapse_out_of_descriptors"]},
    },
    "filters": {
        "redact_query_secrets": {"()": "streamsite.log_filters.RedactQuerySecrets"},
        "collapse_out_of_descriptors": {"()": "streamsite.log_filters.CollapseOutOfDescriptors"},
    },
}
