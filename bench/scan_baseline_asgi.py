"""The product's ASGI app plus one baseline endpoint for benchmarks only.

``GET /bench/streams-scan`` lists streams the way the seed plan did before its registry: a
full ``SCAN MATCH <prefix>* TYPE stream`` on every request. It lives here, not in the product.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamsite.settings")

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()

from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from streams.engine.context import redis_context  # noqa: E402
from streams.store.keys import key_layout  # noqa: E402
from streamsite import urls  # noqa: E402


async def streams_by_scan(request):
    ctx = await redis_context()
    keys = key_layout(ctx.config)
    limit = int(request.GET.get("limit", 100))
    names = []
    for node in ctx.nodes.nodes():
        async with node.main.client() as r:
            names += [keys.name_of(k) async for k in r.scan_iter(match=keys.scan_pattern, count=1000, _type="stream")]
    names = sorted(n for n in names if n)
    return JsonResponse({"count": len(names), "streams": [{"name": n} for n in names[:limit]]})


urls.urlpatterns.insert(0, path("bench/streams-scan", streams_by_scan))

from streamsite.asgi import application as product  # noqa: E402
from streamsite.server.handlers import LeanASGIHandler, PathRouter  # noqa: E402

# The baseline gets the same lean handler as the product's API paths.
application = PathRouter(standard=product, lean=LeanASGIHandler(), prefixes=["/bench/"])
assert settings.ROOT_URLCONF == "streamsite.urls"
