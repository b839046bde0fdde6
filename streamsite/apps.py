from django.contrib.admin.apps import AdminConfig


class StreamsiteAdminConfig(AdminConfig):
    default_site = "streamsite.admin_site.StreamsiteAdminSite"
