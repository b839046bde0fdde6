from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from workouts import display, fit_export, tcx_export
from workouts.charts import power_hr_svg
from workouts.errors import WorkoutInputError
from workouts.models import AthleteProfile, Workout, WorkoutPlan
from workouts.plans.steps import PlanError, steps_from_json, stored_steps
from workouts.plans.text import steps_from_text
from workouts.prepare import markers_field
from workouts.services import workout_fit, workout_save, workout_tcx, workouts_recompute


def column(field: str, description: str, shown):
    """A list column: ``field`` as people read it (``shown``, from workouts.display), sortable."""

    @admin.display(description=description, ordering=field)
    def value(self, obj):
        return shown(getattr(obj, field))

    return value


class AthleteNamed:
    """The athlete by name (full name, else username): every admin of a model with ``athlete``."""

    @admin.display(description="athlete", ordering="athlete__username")
    def athlete_name(self, obj):
        return obj.athlete.get_full_name() or obj.athlete.get_username()

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("athlete")


PHYSIOLOGY_LABELS = {
    "ftp": "FTP", "critical_power": "Critical power (W)", "w_prime": "W′ (J)", "max_heart_rate": "Max heart rate",
    "weight_kg": "Weight (kg)",
}

# The stream a workout was archived from (docs/rides.md): shown and filterable.
STREAM = ("stream",)


class WorkoutForm(forms.ModelForm):
    def clean_markers(self):
        try:
            return markers_field(self.cleaned_data.get("markers"))  # the API's rule
        except WorkoutInputError as exc:
            raise ValidationError(str(exc)) from None


@admin.register(Workout)
class WorkoutAdmin(AthleteNamed, admin.ModelAdmin):
    form = WorkoutForm
    list_display = ("title", "athlete_name", "started_at", "duration", "np", "intensity_factor_2", "tss_1",
                    "avg_power_w", "min_w_prime", *STREAM)
    list_filter = (("athlete", admin.RelatedOnlyFieldListFilter), "started_at", "source", "sport", *STREAM)
    search_fields = ("title", "notes", "athlete__username", "athlete__first_name", "athlete__last_name", *STREAM)
    date_hierarchy = "started_at"
    autocomplete_fields = ("athlete",)
    readonly_fields = ("page_link", "chart", "summary", "peaks", "zones", "laps_table", *STREAM, "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("title", "athlete", "started_at", "sport", "ftp", "source", *STREAM, "page_link", "notes")}),
        ("Ride", {"fields": ("chart", "summary", "peaks", "zones")}),
        ("Laps", {"fields": ("markers", "laps_table")}),
        ("Physiology (copied from the profile when created)", {
            "fields": ("critical_power", "w_prime", "max_heart_rate"), "classes": ("collapse",),
        }),
        ("Timer pauses", {"fields": ("pauses",), "classes": ("collapse",)}),
        ("Record", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )
    actions = ["recompute_metrics", "download_fit", "download_tcx"]
    duration = column("duration_s", "duration", display.duration)
    np = column("normalized_power", "NP", display.watts)
    intensity_factor_2 = column("intensity_factor", "IF", display.intensity)
    tss_1 = column("tss", "TSS", display.tss)
    avg_power_w = column("avg_power", "avg power", display.watts)
    min_w_prime = column("min_w_prime_balance", "min W′bal", display.joules)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name in PHYSIOLOGY_LABELS:
            field.label = PHYSIOLOGY_LABELS[db_field.name]
        return field

    def save_model(self, request, obj, form, change):
        workout_save(obj)  # the metrics follow the edited FTP, CP, W′, max heart rate and pauses

    @admin.display(description="page")
    def page_link(self, obj):
        if obj.pk is None:
            return display.DASH
        url = reverse("workout", kwargs={"workout_id": obj.pk})
        return format_html('<a href="{}">{}</a>', url, url)

    @admin.display(description="power and heart rate")
    def chart(self, obj):
        return power_hr_svg(obj.samples)

    @admin.display(description="summary")
    def summary(self, obj):
        return _rows_table(display.workout_summary(obj))

    @admin.display(description="peak power")
    def peaks(self, obj):
        return _rows_table(display.workout_peaks(obj))

    @admin.display(description="time in zones")
    def zones(self, obj):
        return _rows_table(display.workout_zones(obj))

    @admin.display(description="laps")
    def laps_table(self, obj):
        if not obj.laps:
            return "none: no markers"
        head = mark_safe("<tr><th>lap</th><th>start</th><th>duration</th><th>avg power</th><th>NP</th><th>avg HR</th></tr>")
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (lap["label"] or f"#{k + 1}", display.duration(lap["start_s"]), display.duration(lap["duration_s"]),
             display.watts(lap["avg_power"]), display.watts(lap["np"]), display.bpm(lap["avg_hr"]))
            for k, lap in enumerate(obj.laps)
        ))
        return format_html('<table class="workout-laps">{}{}</table>', head, body)

    @admin.action(description="Recompute metrics of the selected workouts")
    def recompute_metrics(self, request, queryset):
        count = workouts_recompute(queryset.iterator(chunk_size=100))
        self.message_user(request, f"Recomputed {count} workouts.", messages.SUCCESS)

    @admin.action(description="Download as FIT", permissions=["view"])
    def download_fit(self, request, queryset):
        """One workout's FIT activity file (GET /api/workouts/{id}/fit's)."""
        return self._download(request, queryset, "FIT", workout_fit, fit_export)

    @admin.action(description="Download as TCX", permissions=["view"])
    def download_tcx(self, request, queryset):
        """One workout's TCX file (GET /api/workouts/{id}/tcx's)."""
        return self._download(request, queryset, "TCX", workout_tcx, tcx_export)

    def _download(self, request, queryset, kind: str, write, module):
        """An activity file holds one ride, so several selected get a message asking for one."""
        selected = list(queryset[:2])
        if len(selected) != 1:
            self.message_user(request, f"Select one workout to download as {kind} (a {kind} file holds one ride).",
                              messages.WARNING)
            return None
        workout = selected[0]
        try:
            data = async_to_sync(write)(workout)  # written in a worker process
        except fit_export.NoSamplesToExport as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        response = HttpResponse(data, content_type=module.MEDIA_TYPE)
        response["Content-Disposition"] = module.attachment(workout.pk)
        return response


def _rows_table(rows) -> str:
    body = format_html_join(
        "", '<tr><th scope="row">{}</th><td>{}</td><td class="help">{}</td></tr>',
        ((r.label, r.value, r.note) for r in rows),
    )
    return format_html('<table class="workout-summary">{}</table>', body)


@admin.register(AthleteProfile)
class AthleteProfileAdmin(AthleteNamed, admin.ModelAdmin):
    list_display = ("athlete_name", "ftp_w", "cp_w", "w_prime_j", "max_heart_rate_bpm", "weight", "updated_at")
    search_fields = ("athlete__username", "athlete__first_name", "athlete__last_name")
    autocomplete_fields = ("athlete",)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name in PHYSIOLOGY_LABELS:
            field.label = PHYSIOLOGY_LABELS[db_field.name]
        return field

    ftp_w = column("ftp", "FTP", display.watts)
    cp_w = column("critical_power", "CP", display.watts)
    w_prime_j = column("w_prime", "W′", display.joules)
    max_heart_rate_bpm = column("max_heart_rate", "max HR", display.bpm)
    weight = column("weight_kg", "weight", lambda kg: display.DASH if kg is None else f"{kg:.1f} kg")


class WorkoutPlanForm(forms.ModelForm):
    """The steps as JSON, or typed (the grammar of docs/api.md), which then replaces them."""

    text = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 6, "cols": 60}),
        label="Steps as text", help_text="e.g. 10m 55% / 4x(8m 105%, 4m 55%) / 10m 50%, one a line: replaces the steps",
    )

    class Meta:
        model = WorkoutPlan
        fields = ("name", "owner", "public", "shared_with", "steps")

    def clean(self):
        cleaned = super().clean()
        text = cleaned.get("text")
        if text and text.strip():
            try:
                cleaned["steps"] = stored_steps(steps_from_text(text))
            except PlanError as exc:
                self.add_error("text", str(exc))
            else:
                self.errors.pop("steps", None)
                self.instance.steps = cleaned["steps"]
        return cleaned


@admin.register(WorkoutPlan)
class WorkoutPlanAdmin(admin.ModelAdmin):
    form = WorkoutPlanForm
    list_display = ("name", "owner_name", "step_count", "duration", "public", "updated_at")
    list_filter = ("public", ("owner", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "owner__username", "owner__first_name", "owner__last_name")
    autocomplete_fields = ("owner", "shared_with")
    readonly_fields = ("step_table", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "owner", "public", "shared_with")}),
        ("Steps", {"fields": ("step_table", "text", "steps")}),
        ("Record", {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("owner")

    def save_model(self, request, obj, form, change):
        obj.steps = stored_steps(steps_from_json(obj.steps))  # as the API stores them: every step named
        super().save_model(request, obj, form, change)

    @admin.display(description="owner", ordering="owner__username")
    def owner_name(self, obj):
        return obj.owner.get_full_name() or obj.owner.get_username()

    @admin.display(description="steps")
    def step_count(self, obj):
        return len(obj.steps or ())

    @admin.display(description="duration")
    def duration(self, obj):
        return display.duration(obj.duration_s)

    @admin.display(description="the steps")
    def step_table(self, obj):
        if not obj.steps:
            return display.DASH
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (i, step["name"], display.duration(step["duration_s"]), _target(step["target"]),
             _range(step.get("cadence"), "rpm")) for i, step in enumerate(obj.steps, start=1)
        ))
        head = mark_safe("<tr><th>#</th><th>name</th><th>duration</th><th>target</th><th>cadence</th></tr>")
        return format_html('<table class="plan-steps">{}{}</table>', head, rows)


def _range(pair, unit: str) -> str:
    if not pair:
        return display.DASH
    lo, hi = (f"{v:g}" for v in pair)
    return f"{lo} {unit}" if lo == hi else f"{lo}-{hi} {unit}"


def _target(target: dict) -> str:
    if "pct_ftp" in target:
        return _range(target["pct_ftp"], "% FTP")
    return _range(target["watts"], "W")
