"""Assistants (what Dify and MaxKB call applications): a system prompt, the knowledge bases it
answers from, a model and its parameters, an opening, and who may use it. A conversation
started with one keeps it (`conversations.Conversation.assistant`); none is the built-in
default assistant, configured by the CHAT_* settings."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

# Icons are chosen from this list by name; the UI draws each as an inline stroke icon
# (static/js/api.js), so nothing is uploaded and no emoji font is needed.
ICONS = ("bot", "chat", "book", "search", "bulb", "tool", "flask", "chart", "heart", "cap",
         "pen", "globe", "compass", "star")  # fmt: skip


class Assistant(models.Model):
    class Visibility(models.TextChoices):
        PRIVATE = "private", _("Only me")
        LISTED = "listed", _("Listed users")
        EVERYONE = "everyone", _("Everyone")

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assistants"
    )
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    icon = models.CharField(max_length=16, default=ICONS[0], choices=[(i, i) for i in ICONS])
    # Empty: the deployment's CHAT_SYSTEM_PROMPT.
    system_prompt = models.TextField(blank=True)
    knowledge_bases = models.ManyToManyField(
        "knowledge.KnowledgeBase", blank=True, related_name="assistants"
    )
    # Empty provider: the deployment's default provider and model (openspark.llm.factory).
    provider = models.CharField(max_length=40, blank=True)
    model = models.CharField(max_length=100, blank=True)
    temperature = models.FloatField(
        null=True, blank=True, help_text=_("From 0 to 1; empty: the model's default.")
    )
    max_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("Longest reply in tokens; empty: the default.")
    )
    opening_message = models.TextField(blank=True)
    suggested_questions = models.JSONField(default=list, blank=True)
    # Answer only from the knowledge bases: with no passage above their threshold, the reply
    # is `fallback_message` and the model is not called.
    sources_only = models.BooleanField(default=False)
    # Lowest similarity of a passage found only by meaning (keyword matches always count);
    # empty: the knowledge bases' own thresholds.
    score_threshold = models.FloatField(null=True, blank=True)
    fallback_message = models.TextField(blank=True)
    visibility = models.CharField(
        max_length=10, choices=Visibility.choices, default=Visibility.PRIVATE
    )
    shared_with = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="shared_assistants"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(temperature__isnull=True)
                | models.Q(temperature__gte=0, temperature__lte=1),
                name="assistant_temperature_0_to_1",
            )
        ]

    def __str__(self) -> str:
        return self.name
