"""Staff manage every assistant here. The form runs the service's settings check, so the admin
refuses what the API refuses (a model this server does not serve, a base the owner may not
lend, a sources-only assistant without bases)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from openspark.core.errors import ApplicationError
from openspark.llm import chat_models_available

from .models import Assistant
from .services import DEFAULTS, assistant_settings_check

# The service's field names as the form calls them.
_FORM_FIELDS = {"model": "llm", "knowledge_base_ids": "knowledge_bases"}


def _llm_value(provider: str, model: str) -> str:
    return f"{provider}:{model}" if provider else ""


class AssistantAdminForm(forms.ModelForm):
    llm = forms.ChoiceField(label=_("Model"), required=False)
    questions = forms.CharField(
        label=_("Suggested questions"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("One per line, at most six."),
    )

    class Meta:
        model = Assistant
        fields = ["owner", "name", "icon", "description", "system_prompt", "knowledge_bases",
                  "temperature", "max_tokens", "opening_message", "sources_only", "score_threshold",
                  "fallback_message", "visibility", "shared_with"]  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [("", _("Default (the server's model)"))]
        choices += [(_llm_value(m.provider, m.model), f"{m.model} ({m.provider})")
                    for m in chat_models_available()]  # fmt: skip
        current = _llm_value(self.instance.provider, self.instance.model)
        if current and current not in dict(choices):
            choices.append((current, _("%(model)s (not available)") % {"model": current}))
        self.fields["llm"].choices = choices
        self.fields["llm"].initial = current
        self.fields["questions"].initial = "\n".join(self.instance.suggested_questions or [])

    def clean(self):
        data = super().clean()
        provider, _sep, model = (data.get("llm") or "").partition(":")
        values = {field: data.get(field, default) for field, default in DEFAULTS.items()}
        values.update(
            name=data.get("name") or "",
            provider=provider,
            model=model,
            suggested_questions=(data.get("questions") or "").splitlines(),
        )
        owner = data.get("owner") or self.request.user
        attached = (
            list(self.instance.knowledge_bases.values_list("id", flat=True))
            if self.instance.pk
            else []
        )
        bases = data.get("knowledge_bases")
        ids = [base.id for base in bases] if bases is not None else attached
        try:
            values = assistant_settings_check(
                editor=self.request.user,
                owner=owner,
                values=values,
                knowledge_base_ids=ids,
                attached=attached,
            )
        except ApplicationError as error:
            fields = [_FORM_FIELDS.get(f, f) for f in error.details if f != "refused_ids"]
            field = next((f for f in fields if f in self.fields), None)
            self.add_error(field, error.message)
            return data
        self.instance.provider, self.instance.model = provider, model
        self.instance.suggested_questions = values["suggested_questions"]
        return data


@admin.register(Assistant)
class AssistantAdmin(admin.ModelAdmin):
    form = AssistantAdminForm
    list_display = ["icon", "name", "owner", "visibility", "provider", "model", "sources_only",
                    "updated_at"]  # fmt: skip
    list_display_links = ["icon", "name"]
    list_filter = ["visibility", "sources_only", "provider"]
    search_fields = ["name", "description", "owner__username"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    filter_horizontal = ["knowledge_bases", "shared_with"]
    fieldsets = (
        (None, {"fields": ("owner", "name", "icon", "description")}),
        (_("Answering"), {"fields": ("system_prompt", "llm", "temperature", "max_tokens",
                                     "knowledge_bases", "score_threshold", "sources_only",
                                     "fallback_message")}),
        (_("Opening"), {"fields": ("opening_message", "questions")}),
        (_("Who may use it"), {"fields": ("visibility", "shared_with")}),
    )  # fmt: skip

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.request = request  # the editor, for the settings check
        return form

    def get_changeform_initial_data(self, request):
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}
