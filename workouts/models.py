from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from workouts.prepare import Prepared
from workouts.samples import Samples, decode, encode

DERIVED_FIELDS = (
    "duration_s", "moving_time_s", "sample_count", "avg_power", "max_power", "normalized_power",
    "np_low_confidence", "intensity_factor", "tss", "variability_index", "work_kj", "avg_hr",
    "max_hr", "avg_cadence", "peak_5s", "peak_1min", "peak_5min", "peak_20min", "peak_60min",
    "metrics_version",
)


class Workout(models.Model):
    class Sport(models.TextChoices):
        CYCLING = "cycling"
        RUNNING = "running"
        OTHER = "other"

    class Source(models.TextChoices):
        API = "api"
        STREAM = "stream"
        FIT = "fit"
        ADMIN = "admin"

    title = models.CharField(max_length=200)
    athlete = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workouts")
    started_at = models.DateTimeField(db_index=True)
    sport = models.CharField(max_length=20, choices=Sport.choices, default=Sport.CYCLING)
    ftp = models.PositiveIntegerField(null=True, blank=True, help_text="Functional threshold power, watts")
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.ADMIN)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Columnar samples (t, power, heart_rate, …) as one compressed .npz blob; timer pauses.
    samples_blob = models.BinaryField(null=True, blank=True, editable=False)
    pauses = models.JSONField(default=list, blank=True, help_text="[[start_s, end_s], …] of timer pauses")

    # Derived from the samples, pauses and FTP by workouts.services (workouts/metrics.py)
    # whenever a workout is created or saved through them; never edited by hand.
    duration_s = models.FloatField(null=True, editable=False)
    moving_time_s = models.PositiveIntegerField(default=0, editable=False)
    sample_count = models.PositiveIntegerField(default=0, editable=False)
    avg_power = models.FloatField(null=True, editable=False)
    max_power = models.FloatField(null=True, editable=False)
    normalized_power = models.FloatField(null=True, editable=False)
    np_low_confidence = models.BooleanField(default=True, editable=False, help_text="NP from under 10 minutes")
    intensity_factor = models.FloatField(null=True, editable=False)
    tss = models.FloatField(null=True, editable=False)
    variability_index = models.FloatField(null=True, editable=False)
    work_kj = models.FloatField(null=True, editable=False)
    avg_hr = models.FloatField(null=True, editable=False)
    max_hr = models.FloatField(null=True, editable=False)
    avg_cadence = models.FloatField(null=True, editable=False)
    peak_5s = models.FloatField(null=True, editable=False)
    peak_1min = models.FloatField(null=True, editable=False)
    peak_5min = models.FloatField(null=True, editable=False)
    peak_20min = models.FloatField(null=True, editable=False)
    peak_60min = models.FloatField(null=True, editable=False)
    metrics_version = models.PositiveSmallIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["athlete", "-started_at"])]

    def __str__(self) -> str:
        return f"{self.title} ({self.started_at:%Y-%m-%d})"

    @property
    def samples(self) -> Samples | None:
        cached = getattr(self, "_samples", None)
        if cached is None and self.samples_blob:
            cached = self._samples = decode(self.samples_blob)
        return cached

    @samples.setter
    def samples(self, value: Samples | None) -> None:
        self._samples = value
        self.samples_blob = encode(value) if value is not None else None

    def set_metrics(self, values: dict) -> None:
        """The derived fields, as computed by workouts.services for this workout's inputs."""
        for field in DERIVED_FIELDS:
            setattr(self, field, values[field])
        self._metrics_for = self.metrics_inputs()

    def metrics_inputs(self) -> tuple:
        """What the derived fields depend on: samples, pauses and FTP."""
        return (self.samples_blob, self.ftp, [list(p) for p in self.pauses or ()])

    def metrics_current(self) -> bool:
        """Whether the derived fields were set for the current inputs (in this instance)."""
        made_for = getattr(self, "_metrics_for", None)
        return made_for is not None and made_for[0] is self.samples_blob and made_for[1:] == self.metrics_inputs()[1:]

    def apply_prepared(self, prepared: Prepared) -> None:
        """Samples, pauses, FTP and the metrics computed for exactly them (off the event loop,
        workouts/prepare.py)."""
        self.started_at, self.ftp = prepared.started_at, prepared.ftp
        self.pauses = [list(p) for p in prepared.pauses]
        self._samples = None
        self.samples_blob = prepared.blob
        self.set_metrics(prepared.metrics)


class AthleteProfile(models.Model):
    """What the metrics need to know about an athlete: the FTP (the default for live metrics
    and for workouts created without one), maximum heart rate and weight (W/kg)."""

    athlete = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="athlete_profile")
    ftp = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(2000)],
        help_text="Functional threshold power, watts",
    )
    max_heart_rate = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(60), MaxValueValidator(250)], help_text="beats per minute",
    )
    weight_kg = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(20), MaxValueValidator(300)], help_text="kilograms",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"profile of {self.athlete}"
