from django.contrib import admin, messages

from workouts.charts import power_hr_svg
from workouts.models import DERIVED_FIELDS, AthleteProfile, Workout
from workouts.services import workout_save, workouts_recompute


@admin.register(Workout)
class WorkoutAdmin(admin.ModelAdmin):
    list_display = ("title", "athlete", "started_at", "duration_min", "normalized_power", "intensity_factor", "tss", "avg_power")
    list_filter = ("athlete", "started_at", "source", "sport")
    search_fields = ("title", "notes", "athlete__username")
    date_hierarchy = "started_at"
    readonly_fields = ("chart", *DERIVED_FIELDS, "created_at", "updated_at")
    fields = ("title", "athlete", "started_at", "sport", "ftp", "source", "notes", "pauses", "chart", *DERIVED_FIELDS)
    actions = ["recompute_metrics"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("athlete")

    def save_model(self, request, obj, form, change):
        workout_save(obj)  # the metrics follow the edited FTP and pauses

    @admin.display(description="duration (min)", ordering="duration_s")
    def duration_min(self, obj):
        return None if obj.duration_s is None else round(obj.duration_s / 60, 1)

    @admin.display(description="power / heart rate")
    def chart(self, obj):
        return power_hr_svg(obj.samples)

    @admin.action(description="Recompute metrics of the selected workouts")
    def recompute_metrics(self, request, queryset):
        count = workouts_recompute(queryset.iterator(chunk_size=100))
        self.message_user(request, f"Recomputed {count} workouts.", messages.SUCCESS)


@admin.register(AthleteProfile)
class AthleteProfileAdmin(admin.ModelAdmin):
    list_display = ("athlete", "ftp", "max_heart_rate", "weight_kg", "updated_at")
    search_fields = ("athlete__username",)
    raw_id_fields = ("athlete",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("athlete")
