from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied

from streams.access.identity import MANAGE_ALL_STREAMS
from streams.models import ApiToken, Share, parse_scopes


def acts_for_others(request) -> bool:
    """Whether a staff user may mint tokens for, or create shares on behalf of, another user:
    a superuser or a stream manager (``streams.manage_all_streams``). Anyone else acts only
    for themself: "add API token" and "add share" are no licence to impersonate."""
    user = request.user
    return user.is_active and (user.is_superuser or user.has_perm(MANAGE_ALL_STREAMS))


def _only_self(request, db_field, kwargs: dict) -> dict:
    """Limit a user choice to the requesting user (validated: another id is an invalid choice)."""
    kwargs["queryset"] = get_user_model().objects.filter(pk=request.user.pk)
    kwargs["initial"] = request.user.pk
    return kwargs


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "scopes", "expires_at", "is_active", "created_at", "last_used_at")
    list_filter = ("is_active",)
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("user", "name", "scopes", "expires_at", "is_active", "prefix", "created_at", "last_used_at")

    def get_readonly_fields(self, request, obj=None):
        # A token never changes hands: moving one's own token to another user would be minting
        # a token for them.
        return self.readonly_fields if obj is None else ("user", *self.readonly_fields)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user" and not acts_for_others(request):
            kwargs = _only_self(request, db_field, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        if obj.user_id != request.user.pk and not acts_for_others(request):
            raise PermissionDenied("minting a token for another user needs streams.manage_all_streams")
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

    # On another athlete's page the inline's shares are theirs: adding or changing one is
    # acting on their behalf.
    def has_add_permission(self, request, obj=None):
        return super().has_add_permission(request, obj) and (
            obj is None or obj.pk == request.user.pk or acts_for_others(request)
        )

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (
            obj is None or obj.pk == request.user.pk or acts_for_others(request)
        )


@admin.register(Share)
class ShareAdmin(admin.ModelAdmin):
    list_display = ("owner", "viewer", "may_mark", "created_at")
    list_filter = ("may_mark",)
    search_fields = ("owner__username", "viewer__username")
    autocomplete_fields = ("owner", "viewer")

    def get_autocomplete_fields(self, request):
        return self.autocomplete_fields if acts_for_others(request) else ("viewer",)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "owner" and not acts_for_others(request):
            kwargs = _only_self(request, db_field, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_change_permission(self, request, obj=None):
        # Re-pointing another athlete's share (its viewer: yourself) is a share on their behalf.
        return super().has_change_permission(request, obj) and (
            obj is None or obj.owner_id == request.user.pk or acts_for_others(request)
        )

    def save_model(self, request, obj, form, change):
        if obj.owner_id != request.user.pk and not acts_for_others(request):
            raise PermissionDenied("a share on another user's behalf needs streams.manage_all_streams")
        super().save_model(request, obj, form, change)


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class AthleteAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, SharesGivenInline]
