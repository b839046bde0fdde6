from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from streams.models import ApiToken, Share, parse_scopes


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "scopes", "expires_at", "is_active", "created_at", "last_used_at")
    list_filter = ("is_active",)
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("user", "name", "scopes", "expires_at", "is_active", "prefix", "created_at", "last_used_at")

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = ApiToken.issue(
            user=obj.user, name=obj.name, scopes=parse_scopes(obj.scopes), expires_at=obj.expires_at
        )
        obj.pk = token.pk
        messages.warning(request, f"New API token (shown only once): {raw}")


class SharesGivenInline(admin.TabularInline):
    model = Share
    fk_name = "owner"
    extra = 0
    verbose_name = "share (this athlete's streams and workouts, readable by the viewer)"
    verbose_name_plural = "shares given"
    autocomplete_fields = ("viewer",)


@admin.register(Share)
class ShareAdmin(admin.ModelAdmin):
    list_display = ("owner", "viewer", "created_at")
    search_fields = ("owner__username", "viewer__username")
    autocomplete_fields = ("owner", "viewer")


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class AthleteAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, SharesGivenInline]
