"""Settings for the test suite: production-like (DEBUG off), Redis on its own DB index."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")  # the test clients speak plain HTTP
# No clocked collections in the test process: each freezes the survivors, and garbage that
# earlier tests leave behind (pool connections the tests count) must stay collectable.
os.environ.setdefault("GC_FULL_COLLECT_INTERVAL", "0")
# No ride janitor in the tests' own app: it would end and archive other tests' streams. The
# tests of the janitor start one themselves.
os.environ.setdefault("RIDE_JANITOR", "false")

from streamsite.settings import *  # noqa: E402,F401,F403

# The suite does not run collectstatic: static files come from the apps, unhashed (the
# production storage and collectstatic are exercised by tests/test_pages.py).
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
SERVESTATIC_USE_FINDERS = True
