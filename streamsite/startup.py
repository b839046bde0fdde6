"""Start-up's one rule for bad configuration: a setting that stops start-up is one line on
stderr naming the variable, and exit status 2 — for ``manage.py`` and the server alike, not a
traceback through Django's import machinery."""

from __future__ import annotations

import sys

CONFIG_ERROR_EXIT = 2


def settings_or_exit() -> None:
    """Load the settings now; on a bad or missing variable print its message and exit 2."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018 (the first read imports streamsite.settings)
    except ImproperlyConfigured as exc:
        print(f"streamsite: {exc}", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR_EXIT) from None
