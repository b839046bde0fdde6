"""ASGI entry point: ``daphne streamsite.asgi:application``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamsite.settings")

from streamsite.startup import settings_or_exit  # noqa: E402

settings_or_exit()  # a bad or missing variable: one line naming it, exit 2 (not a traceback)

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()  # sets Django up before the routing imports

from streams.core.compat import check_library_versions  # noqa: E402

check_library_versions()

from django.conf import settings  # noqa: E402

from streams.engine.topology import check_at_start_up  # noqa: E402

check_at_start_up(settings.REDIS)  # REDIS_CLUSTER contradicting the Redis stops start-up

from streams.core.gc import tune_gc  # noqa: E402
from streams.engine.context import on_context_start  # noqa: E402
from workouts.rides.janitor import start_ride_janitor  # noqa: E402
from streamsite.routing import websocket_application  # noqa: E402
from streamsite.server.flow_control import FlowControl  # noqa: E402
from streamsite.server.direct import DirectRoutes  # noqa: E402
from streamsite.server.guards import BodyLimit, TrustedProxies  # noqa: E402
from streamsite.server.handlers import LeanASGIHandler, PathRouter  # noqa: E402
from streamsite.server.lifecycle import install_twisted_hooks, lifespan  # noqa: E402

lean_handler = LeanASGIHandler()
application = TrustedProxies(
    FlowControl(
        ProtocolTypeRouter(
            {
                "http": BodyLimit(
                    DirectRoutes(  # the device publish: the lean stack and view, not Django's handler
                        PathRouter(standard=django_asgi_app, lean=lean_handler, prefixes=settings.LEAN_PATH_PREFIXES),
                        handler=lean_handler,
                    )
                ),
                "websocket": websocket_application(),
                "lifespan": lifespan,
            }
        )
    )
)
install_twisted_hooks()
tune_gc()
on_context_start(start_ride_janitor)  # server processes only: commands never load this module

from streamsite.views import warm_error_paths  # noqa: E402

warm_error_paths()  # answering an error must open no file: the process may have none left


def _log_config_once() -> None:
    import json
    import logging

    from django.conf import settings

    logging.getLogger("streamsite").info("redis configuration: %s", json.dumps(settings.REDIS.summary()))


_log_config_once()
