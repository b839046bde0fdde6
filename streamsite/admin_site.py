"""The admin site: Django's, plus the monitoring dashboard and the Redis streams pages."""

from django.contrib.admin import AdminSite
from django.urls import path

from monitoring import admin_views as views


class StreamsiteAdminSite(AdminSite):
    site_header = "streamsite administration"
    site_title = "streamsite"

    def get_urls(self):
        custom = [
            path("monitoring/", self.admin_view(views.dashboard), name="monitoring-dashboard"),
            path("redis-streams/", self.admin_view(views.streams_list), name="redis-streams"),
            path("redis-streams/delete/", self.admin_view(views.streams_delete), name="redis-streams-delete"),
            path("redis-streams/archive/", self.admin_view(views.streams_archive), name="redis-streams-archive"),
            path("redis-streams/<str:name>/", self.admin_view(views.stream_detail), name="redis-stream"),
        ]
        return custom + super().get_urls()

    def get_app_list(self, request, app_label=None):
        """Show the two custom pages on the admin index, under 'Operations'."""
        apps = super().get_app_list(request, app_label)
        if app_label is None and request.user.is_staff:
            apps.append({
                "name": "Operations", "app_label": "operations", "app_url": "", "has_module_perms": True,
                "models": [
                    {"name": "Monitoring dashboard", "object_name": "dashboard", "admin_url": "/admin/monitoring/",
                     "view_only": True, "perms": {"view": True}},
                    {"name": "Redis streams", "object_name": "redis_streams", "admin_url": "/admin/redis-streams/",
                     "view_only": True, "perms": {"view": True}},
                ],
            })
        return apps
