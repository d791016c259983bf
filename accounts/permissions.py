from django.utils.translation import gettext_lazy as _
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission


class BrowserSessionOnly(BasePermission):
    """Only a signed-in browser session, never an API key: a leaked key must not be able to
    mint a successor that outlives its revocation, nor revoke its owner's other keys. A list
    of what is allowed, so any authentication added later is refused here too."""

    message = _(
        "API keys are managed from a signed-in browser session (the account page), "
        "not with an API key."
    )

    def has_permission(self, request, view) -> bool:
        return isinstance(request.successful_authenticator, SessionAuthentication)
