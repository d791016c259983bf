from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.utils.translation import gettext_lazy as _


class SignupForm(UserCreationForm):
    email = forms.EmailField(label=_("E-mail address"), required=False)

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if settings.ACCOUNT_EMAIL_VERIFICATION:
            self.fields["email"].required = True
            self.fields["email"].help_text = _("We will send a link to confirm it.")


class VerificationResendForm(forms.Form):
    email = forms.EmailField(label=_("E-mail address"))
