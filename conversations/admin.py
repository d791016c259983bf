from django.contrib import admin

from .models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["role", "status", "content", "completion_tokens", "error_code", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "owner", "assistant", "created_at", "updated_at"]
    search_fields = ["title", "owner__username"]
    list_select_related = ["owner", "assistant"]
    raw_id_fields = ["owner", "assistant"]
    filter_horizontal = ["knowledge_bases"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "role", "status", "model", "completion_tokens",
                    "feedback_rating", "created_at"]  # fmt: skip
    list_filter = ["role", "status", "provider", "feedback_rating"]
    search_fields = ["content", "conversation__owner__username"]
    raw_id_fields = ["conversation", "reply_to"]
    readonly_fields = ["task_id", "last_seq", "started_at", "first_token_at", "finished_at",
                       "created_at", "updated_at"]  # fmt: skip
