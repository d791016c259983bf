"""Browser pages: signup, login (brute-force limited), logout, account."""

import math
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_http_methods

from openspark.core.pages import js_strings
from throttling.identity import client_ip

from .forms import SignupForm, VerificationResendForm
from .selectors import InvalidLink, email_verification_get
from .services import (
    email_verification_resend,
    email_verification_send,
    email_verify,
    login_attempt_consume,
    signup_attempt_consume,
    user_create,
)


def throttled(consume, *, refused: str, unavailable: str):
    """A view decorator: each POST first spends one attempt, `consume(request)` (a limiter
    decision); a refused one never reaches the view and gets a readable page: 429 `refused`,
    or 503 `unavailable` while Redis is down and the throttle fails closed."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.method == "POST":
                decision = consume(request)
                if not decision.allowed:
                    return _refused(request, decision, refused, unavailable)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def _refused(request, decision, refused: str, unavailable: str):
    retry_after = max(1, math.ceil(decision.retry_after))
    if decision.code == "dependency_unavailable":
        status, message = 503, str(unavailable)
    else:
        minutes = math.ceil(retry_after / 60)
        wait = ngettext(
            "You can try again in about %(minutes)d minute.",
            "You can try again in about %(minutes)d minutes.",
            minutes,
        ) % {"minutes": minutes}
        status, message = 429, f"{refused} {wait}"
    response = render(
        request,
        "accounts/refused.html",
        {"message": message, "back": request.get_full_path()},
        status=status,
    )
    response["Retry-After"] = str(retry_after)
    return response


def _login_attempt(request):
    username = request.POST.get(get_user_model().USERNAME_FIELD, "")
    return login_attempt_consume(ip=client_ip(request), username=username)


# The product's login page and the admin's (accounts.admin_site) spend the same buckets.
login_throttled = throttled(
    _login_attempt,
    refused=gettext_lazy("Too many login attempts."),
    unavailable=gettext_lazy("Logging in is temporarily unavailable. Please try again shortly."),
)


@method_decorator(login_throttled, name="dispatch")
class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["email_verification"] = settings.ACCOUNT_EMAIL_VERIFICATION
        return context


@method_decorator(require_http_methods(["POST"]), name="dispatch")
class LogoutView(auth_views.LogoutView):
    pass


def _signup_attempt(request):
    return signup_attempt_consume(ip=client_ip(request), email=request.POST.get("email", ""))


_SIGNUP_UNAVAILABLE = gettext_lazy(
    "Signing up is temporarily unavailable. Please try again shortly."
)


@throttled(
    _signup_attempt,
    refused=gettext_lazy("Too many sign-ups from your network."),
    unavailable=_SIGNUP_UNAVAILABLE,
)
def signup(request):
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        verify = settings.ACCOUNT_EMAIL_VERIFICATION
        user = user_create(
            username=form.cleaned_data["username"],
            email=form.cleaned_data.get("email", ""),
            password=form.cleaned_data["password1"],
            verify_email=verify,
        )
        if verify:
            sent = email_verification_send(user=user, site_url=request.build_absolute_uri("/"))
            if sent:
                messages.info(
                    request,
                    _("We sent a link to %(email)s. Follow it to activate your account.")
                    % {"email": user.email},
                )
            else:
                messages.warning(
                    request,
                    _(
                        "Your account is created, but the e-mail to %(email)s could not be "
                        "sent. Ask for a new link in a few minutes."
                    )
                    % {"email": user.email},
                )
            return redirect("accounts:verify-sent")
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, _("Welcome to OpenSpark!"))
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "accounts/signup.html", {"form": form})


def verification_sent(request):
    return render(request, "accounts/verify_sent.html")


@throttled(
    _signup_attempt,
    refused=gettext_lazy("Too many requests for a new link."),
    unavailable=_SIGNUP_UNAVAILABLE,
)
def verification_resend(request):
    form = VerificationResendForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        email_verification_resend(email=email, site_url=request.build_absolute_uri("/"))
        # The same answer whether or not an account awaits verification at this address.
        messages.info(
            request,
            _("If an account awaiting verification uses %(email)s, we have sent it a new link.")
            % {"email": email},
        )
        return redirect("accounts:verify-sent")
    return render(request, "accounts/verify_resend.html", {"form": form})


@require_http_methods(["GET", "POST"])
def verify(request, token: str):
    """GET shows a button, POST activates: mail scanners that open links change nothing."""
    try:
        if request.method == "GET":
            verification = email_verification_get(token=token)
            return render(request, "accounts/verify_confirm.html", {"verification": verification})
        activated = email_verify(token=token)
    except InvalidLink as error:
        return render(
            request, "accounts/verify_invalid.html", {"message": error.message}, status=400
        )
    if activated:
        messages.success(request, _("Your e-mail address is verified. You can log in now."))
    else:
        messages.info(request, _("This e-mail address is already verified."))
    return redirect(settings.LOGIN_URL)


ACCOUNT_JS_STRINGS = {
    "plan": gettext_lazy("Plan"),
    "rpm": gettext_lazy("Requests per minute"),
    "limits": gettext_lazy("Rate limits"),
    "appliesTo": gettext_lazy("Applies to"),
    "allRequests": gettext_lazy("All requests"),
    "groupConversations": gettext_lazy("Conversations"),
    "groupMessages": gettext_lazy("Sending messages"),
    "groupPolling": gettext_lazy("Reading replies and tasks (polling)"),
    "groupKnowledge": gettext_lazy("Knowledge"),
    "groupGlobal": gettext_lazy("Whole service (everyone together)"),
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
