from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .errors import Conflict
from .models import DeadLetter, Notification, TaskRecord
from .selectors import TASK_STATES, task_state_get, tasks_with_state
from .services import dead_letter_discard, dead_letter_retry, task_record_retry


class TaskStateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [(state, state) for state in TASK_STATES]

    def queryset(self, request, queryset):
        return queryset.filter(state=self.value()) if self.value() else queryset


@admin.register(TaskRecord)
class TaskRecordAdmin(admin.ModelAdmin):
    """Recent tasks with their Celery state (failed and lost ones: filter by state); staff
    queue a failed or lost one again with its recorded arguments."""

    list_display = ("task_id", "name", "user", "state", "progress", "created_at", "error")
    list_filter = (TaskStateFilter, "name")
    search_fields = ("task_id", "user__username")
    readonly_fields = (
        "task_id", "name", "user", "args", "kwargs", "options", "progress", "created_at",
        "updated_at", "state", "error",
    )  # fmt: skip
    actions = ["retry"]

    def get_queryset(self, request):
        return tasks_with_state(super().get_queryset(request).select_related("user"))

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description=_("state"), ordering="state")
    def state(self, record: TaskRecord) -> str:
        return record.state

    @admin.display(description=_("error"))
    def error(self, record: TaskRecord) -> str:
        return (task_state_get(record=record)["error"] or "")[:200]

    @admin.action(description=_("Retry (queue again with the same arguments)"))
    def retry(self, request, queryset):
        queued = 0
        for record in queryset:
            try:
                task_record_retry(record=record)
                queued += 1
            except Conflict as error:
                self.message_user(request, f"{record.task_id}: {error.message}", messages.WARNING)
        if queued:
            self.message_user(
                request,
                ngettext("%d task queued again.", "%d tasks queued again.", queued) % queued,
            )


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Tasks that failed for good: retry queues them again under the same id (same
    arguments, queue and owner); discard closes them."""

    list_display = ("name", "task_id", "user", "status", "attempts", "failures", "last_failed_at",
                    "error")  # fmt: skip
    list_filter = ("status", "name")
    search_fields = ("task_id", "name", "error", "user__username")
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    actions = ["retry", "discard"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description=_("Retry (queue again with the same arguments)"))
    def retry(self, request, queryset):
        letters = list(queryset.exclude(status=DeadLetter.Status.RETRIED))
        for dead_letter in letters:
            dead_letter_retry(dead_letter=dead_letter)
        self.message_user(
            request,
            ngettext("%d task queued again.", "%d tasks queued again.", len(letters))
            % len(letters),
        )

    @admin.action(description=_("Discard"))
    def discard(self, request, queryset):
        for dead_letter in queryset:
            dead_letter_discard(dead_letter=dead_letter)
        self.message_user(request, _("Discarded."))


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "kind", "level", "created_at", "email_status", "read_at")
    list_filter = ("kind", "level", "email_status")
    search_fields = ("title", "user__username")
