import hashlib
import secrets

from django.conf import settings
from django.db import models

TOKEN_PREFIX = "sst_"
SCOPES = ("read", "publish", "manage")
ALL_SCOPES = ",".join(SCOPES)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def parse_scopes(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``read,publish`` → ('read', 'publish'); an unknown or empty scope raises ValueError."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    scopes = [p.strip() for p in parts if p.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be a comma-separated subset of {ALL_SCOPES}; got {value!r}")
    return tuple(s for s in SCOPES if s in scopes)


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 is stored; the token is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="First characters, to tell tokens apart")
    scopes = models.CharField(
        max_length=40, default=ALL_SCOPES, help_text=f"comma-separated, any of {ALL_SCOPES}"
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text="empty: never expires")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    def clean(self):
        from django.core.exceptions import ValidationError

        try:
            self.scopes = ",".join(parse_scopes(self.scopes))
        except ValueError as exc:
            raise ValidationError({"scopes": str(exc)}) from None

    @classmethod
    def issue(cls, *, user, name: str = "", scopes=SCOPES, expires_at=None) -> tuple["ApiToken", str]:
        """Create a token; returns the row and the raw token (never stored)."""
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, key_hash=hash_token(raw), prefix=raw[:12],
            scopes=",".join(parse_scopes(scopes)), expires_at=expires_at,
        )
        return token, raw


class Share(models.Model):
    """An athlete shares all their streams and workouts with a viewer (a coach)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="shares_given")
    viewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="shares_received")
    may_mark = models.BooleanField(
        default=False, verbose_name="may add markers",
        help_text="the viewer may also add markers (laps) to the owner's rides (docs/security.md)",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "viewer"], name="share_once"),
            models.CheckConstraint(condition=~models.Q(owner=models.F("viewer")), name="share_not_self"),
        ]
        # Object-independent rights over every athlete's streams (docs/security.md: who may do what).
        permissions = [
            ("view_all_streams", "Can read every stream"),
            ("manage_all_streams", "Can publish to, change, archive and delete every stream"),
        ]

    def __str__(self) -> str:
        return f"{self.owner} → {self.viewer}"
