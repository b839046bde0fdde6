from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from workouts.plans.steps import PLAN_NAME_MAX, PlanError, steps_from_json
from workouts.prepare import Prepared
from workouts.samples import Samples, decode, encode

DERIVED_FIELDS = (
    "duration_s", "moving_time_s", "sample_count", "avg_power", "max_power", "normalized_power",
    "np_low_confidence", "intensity_factor", "tss", "variability_index", "work_kj", "avg_hr",
    "max_hr", "avg_cadence", "peak_5s", "peak_1min", "peak_5min", "peak_20min", "peak_60min",
    "min_w_prime_balance", "w_prime_below_25_s", "time_in_power_zones", "time_in_hr_zones",
    "metrics_version",
)
# What the W′ balance and the zones are computed from besides FTP: copied from the athlete's
# profile when a workout is created without them (like FTP), so a workout's metrics do not
# change when the profile does.
PHYSIOLOGY_FIELDS = ("critical_power", "w_prime", "max_heart_rate")
DEFAULTS_HELP = (
    "Defaults when empty: CP = FTP, W′ = 20,000 J; without CP and FTP there is no W′ balance."
)


def critical_power_field():
    return models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(2000)],
        help_text="Critical power (CP), watts. " + DEFAULTS_HELP,
    )


def w_prime_field():
    return models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1000), MaxValueValidator(100_000)],
        help_text="W′ (work capacity above CP), joules. " + DEFAULTS_HELP,
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
    critical_power = critical_power_field()
    w_prime = w_prime_field()
    max_heart_rate = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(60), MaxValueValidator(250)],
        help_text="the athlete's maximum heart rate, beats per minute (heart-rate zones; max HR is the ride's highest)",
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.ADMIN)
    stream = models.CharField(max_length=128, blank=True, db_index=True, help_text="the stream it was archived from")
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Columnar samples (t, power, heart_rate, …) as one compressed .npz blob; timer pauses.
    samples_blob = models.BinaryField(null=True, blank=True, editable=False)
    pauses = models.JSONField(default=list, blank=True, help_text="[[start_s, end_s], …] of timer pauses")
    markers = models.JSONField(
        default=list, blank=True,
        help_text="[[ride_s, label], …]: where laps start, in seconds from the first sample (a ride's markers)",
    )

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
    min_w_prime_balance = models.FloatField(null=True, editable=False, help_text="joules")
    w_prime_below_25_s = models.PositiveIntegerField(null=True, editable=False, help_text="seconds below 25% of W′")
    time_in_power_zones = models.JSONField(null=True, editable=False, help_text="seconds in Coggan's zones 1-7")
    time_in_hr_zones = models.JSONField(null=True, editable=False, help_text="seconds in heart-rate zones 1-5")
    metrics_version = models.PositiveSmallIntegerField(default=0, editable=False)
    # The laps the markers split the ride into (workouts.metrics.laps_from_boundaries), derived
    # like the metrics: [{start_s, end_s, duration_s, moving_s, avg_power, np, avg_hr, label}, …].
    laps = models.JSONField(default=list, editable=False)
    # A ride archived from a stream with a plan: the compliance the coach saw live
    # (workouts.compliance.plan_compliance): {"plan_id", "plan", "session", "steps": [...]}.
    plan_compliance = models.JSONField(null=True, blank=True, editable=False)

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
        """What the derived fields depend on: samples, pauses, FTP, CP, W′ and max heart rate."""
        return (self.samples_blob, self.ftp, [list(p) for p in self.pauses or ()], *self.physiology().values())

    def physiology(self) -> dict:
        """CP, W′ and max heart rate, as ``workouts.prepare.metrics_of`` takes them."""
        return {field: getattr(self, field) for field in PHYSIOLOGY_FIELDS}

    def metrics_current(self) -> bool:
        """Whether the derived fields were set for the current inputs (in this instance)."""
        made_for = getattr(self, "_metrics_for", None)
        return made_for is not None and made_for[0] is self.samples_blob and made_for[1:] == self.metrics_inputs()[1:]

    def set_laps(self, laps: list[dict]) -> None:
        """The laps, as computed by workouts.services for this workout's samples and markers."""
        self.laps = laps
        self._laps_for = self.laps_inputs()

    def laps_inputs(self) -> tuple:
        """What the laps depend on: samples, pauses and markers."""
        return (self.samples_blob, [list(p) for p in self.pauses or ()], [list(m) for m in self.markers or ()])

    def laps_current(self) -> bool:
        """Whether the laps were set for the current inputs (in this instance)."""
        made_for = getattr(self, "_laps_for", None)
        return made_for is not None and made_for[0] is self.samples_blob and made_for[1:] == self.laps_inputs()[1:]

    def apply_prepared(self, prepared: Prepared) -> None:
        """Samples, pauses, FTP and the metrics computed for exactly them (off the event loop,
        workouts/prepare.py)."""
        self.started_at, self.ftp = prepared.started_at, prepared.ftp
        for field in PHYSIOLOGY_FIELDS:
            setattr(self, field, prepared.physiology.get(field))
        self.pauses = [list(p) for p in prepared.pauses]
        self._samples = None
        self.samples_blob = prepared.blob
        self.set_metrics(prepared.metrics)
        self.markers = [list(m) for m in prepared.markers]
        self.set_laps(prepared.laps)


class AthleteProfile(models.Model):
    """What the metrics need to know about an athlete: the FTP (the default for live metrics
    and for workouts created without one), critical power and W′ (W′ balance), maximum heart
    rate (heart-rate zones) and weight (W/kg)."""

    athlete = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="athlete_profile")
    ftp = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(2000)],
        help_text="Functional threshold power, watts",
    )
    critical_power = critical_power_field()
    w_prime = w_prime_field()
    max_heart_rate = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(60), MaxValueValidator(250)], help_text="beats per minute",
    )
    weight_kg = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(20), MaxValueValidator(300)], help_text="kilograms",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"profile of {self.athlete}"


def validate_plan_steps(value) -> None:
    """The steps' schema (workouts/plans/steps.py) as a field validator: the admin's forms."""
    try:
        steps_from_json(value)
    except PlanError as exc:
        raise ValidationError(str(exc)) from None


class WorkoutPlan(models.Model):
    """A planned workout: ordered steps, each a duration and a power target (% of FTP or watts),
    optionally a cadence range. Read by its owner, the users it is shared with (``shared_with``,
    or a Share from its owner), anyone when public, and those with ``workouts.view_workoutplan``
    or ``streams.manage_all_streams`` (workouts/plan_services.py ``plans_readable``).

    The steps are one validated JSON list (not rows): a plan is read and written whole, never
    queried by step, and the live engine wants it whole."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workout_plans")
    name = models.CharField(max_length=PLAN_NAME_MAX)
    steps = models.JSONField(
        default=list, validators=[validate_plan_steps],
        help_text='[{"name", "duration_s", "target": {"pct_ftp": [lo, hi]} or {"watts": [lo, hi]}, "cadence": [lo, hi]}, …]',
    )
    public = models.BooleanField(default=False, help_text="every signed-in user may read it")
    shared_with = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="plans_shared_with_me", help_text="users who may read it",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-pk"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.name

    @property
    def duration_s(self) -> int:
        return sum(int(step["duration_s"]) for step in self.steps or ())
