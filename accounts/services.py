"""Writes for accounts: users, e-mail verification, API keys, the login and signup throttles."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import smtplib
import unicodedata

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from openspark.core.errors import NotFound
from throttling.limiter import LimitDecision, Rule, limiter_consume
from throttling.models import Plan

from .keys import KEY_PREFIX, api_key_generate, api_key_hash
from .models import ApiKey, EmailVerification
from .selectors import VERIFY_SALT, email_verification_get

logger = logging.getLogger(__name__)


@transaction.atomic
def user_create(*, username: str, password: str, email: str = "", plan: Plan | None = None,
                is_staff: bool = False, verify_email: bool = False):  # fmt: skip
    """`verify_email`: the account stays inactive until the link that
    `email_verification_send` mails to `email` is followed."""
    User = get_user_model()
    user = User(username=username, email=email, plan=plan, is_staff=is_staff, is_superuser=is_staff)
    user.set_password(password)
    user.is_active = not verify_email
    user.full_clean(exclude=["password"])
    user.save()
    if verify_email:
        EmailVerification.objects.create(user=user, email=email)
    return user


# --- E-mail verification (ACCOUNT_EMAIL_VERIFICATION; links: selectors.email_verification_get)


def email_verification_token(*, user) -> str:
    return signing.dumps({"u": user.pk, "e": user.email}, salt=VERIFY_SALT)


def email_verification_send(*, user, site_url: str) -> bool:
    """Mail the user a fresh link (in the active language); False when the mail could not be
    handed to the mail server (the user can ask again: `email_verification_resend`)."""
    link = site_url.rstrip("/") + reverse(
        "accounts:verify", args=[email_verification_token(user=user)]
    )
    context = {
        "user": user,
        "link": link,
        "days": max(1, round(settings.ACCOUNT_EMAIL_VERIFICATION_MAX_AGE / 86400)),
    }
    subject = render_to_string("accounts/email/verify_subject.txt", context).strip()
    body = render_to_string("accounts/email/verify_body.txt", context)
    try:
        send_mail(subject, body, None, [user.email])
    except (smtplib.SMTPException, OSError):
        logger.exception("Verification e-mail to user %s not sent", user.pk)
        return False
    return True


def email_verify(*, token: str) -> bool:
    """Follow a link: activate its account. True when this call activated it, False when it
    already was verified (the link is spent: a later deactivation is never undone by it)."""
    with transaction.atomic():
        verification = email_verification_get(token=token)
        # Locked: two clicks at once activate once.
        verification = (
            EmailVerification.objects.select_for_update()
            .select_related("user")
            .get(pk=verification.pk)
        )
        if verification.verified_at is not None:
            return False
        verification.verified_at = timezone.now()
        verification.save(update_fields=["verified_at"])
        user = verification.user
        user.is_active = True
        # save(), not update(): its signal drops cached API-key rows that saw the user inactive.
        user.save(update_fields=["is_active"])
    return True


def email_verification_resend(*, email: str, site_url: str) -> None:
    """Mail a fresh link to each pending account at this address (a few at most). Says
    nothing of whether there was one: the page must not reveal who has an account."""
    pending = EmailVerification.objects.select_related("user").filter(
        email__iexact=email.strip(), verified_at__isnull=True
    )
    for verification in pending[:3]:
        email_verification_send(user=verification.user, site_url=site_url)


def api_key_create(*, user, name: str, expires_at: dt.datetime | None = None) -> tuple[ApiKey, str]:
    """Create a key and return it with its raw value: the only time the raw value exists."""
    raw_key = api_key_generate()
    key = ApiKey.objects.create(
        user=user,
        name=name,
        prefix=raw_key[: len(KEY_PREFIX) + 6],
        key_hash=api_key_hash(raw_key),
        expires_at=expires_at,
    )
    return key, raw_key


def api_key_revoke(*, user, key_id: int) -> None:
    key = ApiKey.objects.filter(id=key_id, user=user).first()
    if key is None:
        raise NotFound("No API key with this id.")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        # save(), not update(): its signal drops the key's cached authentication at once.
        key.save(update_fields=["revoked_at"])


# --- Login and signup throttles ---------------------------------------------------------------
# On the project's one limiter (throttling.limiter): each attempt is checked against every rule
# and consumed from all of them in one atomic Redis call, or from none when one refuses.

_RATE = re.compile(r"(\d+)/(\d*)([smhd])[a-z]*")  # as django-ratelimit read it: "10/min" too
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _rate(setting: str) -> tuple[int, int]:
    """A rate setting ("10/m", "20/h", "5/15m") as (limit, period in seconds)."""
    value = getattr(settings, setting)
    match = _RATE.fullmatch(value.replace(" ", ""))
    if match is None or int(match[1]) < 1:
        raise ImproperlyConfigured(f'{setting}={value!r}: expected "<count>/<s|m|h|d>".')
    count, multiple, unit = match.groups()
    return int(count), int(multiple or 1) * _UNIT_SECONDS[unit]


def _fail_closed() -> bool:
    return settings.LOGIN_THROTTLE_FAIL_MODE == "closed"


def _digest(value: str) -> str:
    # Keys and the limiter's statistics never hold what people typed, and stay short.
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def username_canonical(username: str) -> str:
    """The username as the login form matches it, case-folded. The form strips it and
    NFKC-normalises it (`AbstractBaseUser.normalize_username`), so " alice" and "alice" in
    full-width letters are one account and must be one bucket. The backend's match is exact
    (case-sensitive on SQLite and PostgreSQL), so "ALICE" cannot log into "alice": folding
    case gives an attacker nothing and costs only a shared bucket between names differing in
    case alone, which signup refuses anyway; it keeps the bucket right under a database whose
    collation ignores case."""
    name = get_user_model().normalize_username(username).strip().casefold()
    return unicodedata.normalize("NFKC", name)


def login_attempt_consume(*, ip: str, username: str) -> LimitDecision:
    """One login attempt (a POST to the login page or the admin's): LOGIN_RATE_LIMIT per client
    IP and per username. Every attempt counts, successful or not, so the check can be made
    before the password is, in the same atomic call. With Redis down, LOGIN_THROTTLE_FAIL_MODE
    picks per-process buckets ("open") or a refusal ("closed")."""
    limit, period = _rate("LOGIN_RATE_LIMIT")
    closed = _fail_closed()
    rules = [Rule("login:ip", f"ip:{ip}", limit, period, fail_closed=closed)]
    name = username_canonical(username)
    if name:  # an empty name cannot log in: the form refuses it before any password check
        rules.append(Rule("login:user", f"h:{_digest(name)}", limit, period, fail_closed=closed))
    return limiter_consume(rules=rules, who=f"ip:{ip}")


def signup_attempt_consume(*, ip: str, email: str = "") -> LimitDecision:
    """One signup, or one request to mail a verification link again: SIGNUP_RATE_LIMIT per
    client IP and per e-mail address (so a stranger's inbox cannot be flooded from many
    networks). Every attempt counts; same fail mode as logins."""
    limit, period = _rate("SIGNUP_RATE_LIMIT")
    closed = _fail_closed()
    rules = [Rule("signup:ip", f"ip:{ip}", limit, period, fail_closed=closed)]
    address = email.strip().casefold()
    if address:
        rules.append(
            Rule("signup:email", f"h:{_digest(address)}", limit, period, fail_closed=closed)
        )
    return limiter_consume(rules=rules, who=f"ip:{ip}")
