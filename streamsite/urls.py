from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_with_finders
from django.urls import path, re_path
from django.views.static import serve as serve_collected

from monitoring import views as monitoring_views
from streams.views import live_page
from streamsite.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("live/<str:name>", live_page, name="live"),
    path("health/", monitoring_views.health, name="health"),
    path("health/ready", monitoring_views.ready, name="health-ready"),
    path("health/metrics", monitoring_views.metrics_json, name="health-metrics"),
    path("metrics", monitoring_views.prometheus, name="prometheus-metrics"),
]

# daphne serves no static files itself. The admin's few assets are served here: from the
# apps in DEBUG, from STATIC_ROOT (collectstatic, done in the Docker image) otherwise.
# Put a CDN or proxy cache in front for heavy traffic.
static_prefix = settings.STATIC_URL.lstrip("/")
if settings.DEBUG:
    urlpatterns.append(re_path(rf"^{static_prefix}(?P<path>.*)$", serve_with_finders, {"insecure": True}))
else:
    urlpatterns.append(
        re_path(rf"^{static_prefix}(?P<path>.*)$", serve_collected, {"document_root": settings.STATIC_ROOT})
    )
handler400 = "streamsite.views.bad_request_json"
handler404 = "streamsite.views.not_found"
handler500 = "streamsite.views.server_error_json"
