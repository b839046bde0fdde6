from django.contrib import admin
from django.urls import path

from monitoring import views as monitoring_views
from streamsite.api import api
from workouts.rides.views import group_page, home_page, live_page, ride_page
from workouts.views import workout_page

urlpatterns = [
    path("", home_page, name="home"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("live/", group_page, name="live-group"),
    path("live/<str:name>", live_page, name="live"),
    path("ride/", ride_page, name="ride"),
    path("workouts/<int:workout_id>", workout_page, name="workout"),
    path("health/", monitoring_views.health, name="health"),
    path("health/ready", monitoring_views.ready, name="health-ready"),
    path("health/metrics", monitoring_views.metrics_json, name="health-metrics"),
    path("metrics", monitoring_views.prometheus, name="prometheus-metrics"),
]

handler400 = "streamsite.views.bad_request_json"
handler404 = "streamsite.views.not_found"
handler500 = "streamsite.views.server_error_json"
