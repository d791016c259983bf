"""Browser pages: signup, login (brute-force limited), logout, account."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods
from django_ratelimit.core import is_ratelimited

from openspark.core.pages import js_strings

from .forms import SignupForm
from .services import user_create


def _login_limited(request) -> bool:
    """Counts login POSTs per client IP and per username; both limits must hold."""
    rate = settings.LOGIN_RATE_LIMIT
    by_ip = is_ratelimited(
        request, group="login-ip", key="ip", rate=rate, method="POST", increment=True
    )
    by_user = is_ratelimited(
        request, group="login-user", key="post:username", rate=rate, method="POST", increment=True
    )
    return by_ip or by_user


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        if _login_limited(request):
            form = self.get_form()
            form.errors.clear()
            form.add_error(None, _("Too many login attempts. Please wait a minute and try again."))
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)


@method_decorator(require_http_methods(["POST"]), name="dispatch")
class LogoutView(auth_views.LogoutView):
    pass


def signup(request):
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = user_create(
            username=form.cleaned_data["username"],
            email=form.cleaned_data.get("email", ""),
            password=form.cleaned_data["password1"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, _("Welcome to OpenSpark!"))
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "accounts/signup.html", {"form": form})


ACCOUNT_JS_STRINGS = {
    "plan": gettext_lazy("Plan"),
    "rpm": gettext_lazy("Requests per minute"),
    "endpoint": gettext_lazy("Endpoint group"),
    "tokens": gettext_lazy("Tokens this month"),
    "reserved": gettext_lazy("held for replies in progress"),
    "storage": gettext_lazy("Document storage"),
    "documents": gettext_lazy("Documents"),
    "bases": gettext_lazy("Knowledge bases"),
    "usage": gettext_lazy("Used this minute"),
    "noKeys": gettext_lazy("No API keys yet."),
    "name": gettext_lazy("Name"),
    "prefix": gettext_lazy("Key"),
    "created": gettext_lazy("Created"),
    "expires": gettext_lazy("Expires"),
    "status": gettext_lazy("Status"),
    "actions": gettext_lazy("Actions"),
    "active": gettext_lazy("Active"),
    "revoked": gettext_lazy("Revoked"),
    "revoke": gettext_lazy("Revoke"),
    "confirmRevoke": gettext_lazy("Revoke this key? Programs using it stop working."),
    "nameRequired": gettext_lazy("Please give the key a name."),
    "newKey": gettext_lazy("Your new API key"),
    "copy": gettext_lazy("Copy"),
    "copied": gettext_lazy("Copied"),
    "shownOnce": gettext_lazy("Copy your key now — it will not be shown again."),
    "network": gettext_lazy("Network error — check your connection."),
}


@login_required
def account(request):
    return render(request, "accounts/account.html", {"js_strings": js_strings(ACCOUNT_JS_STRINGS)})
