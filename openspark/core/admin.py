from django.contrib import admin

from .models import Notification, TaskRecord


@admin.register(TaskRecord)
class TaskRecordAdmin(admin.ModelAdmin):
    list_display = ("task_id", "name", "user", "progress", "created_at")
    list_filter = ("name",)
    search_fields = ("task_id", "user__username")
    readonly_fields = ("task_id", "name", "user", "progress", "created_at", "updated_at")


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "level", "created_at", "emailed_at", "read_at")
    list_filter = ("level",)
    search_fields = ("title", "user__username")
