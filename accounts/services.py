"""Writes for accounts: users, API keys, and the login and signup throttles."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from openspark.core.errors import NotFound
from throttling.limiter import LimitDecision, Rule, limiter_consume
from throttling.models import Plan

from .keys import KEY_PREFIX, api_key_generate, api_key_hash
from .models import ApiKey


@transaction.atomic
def user_create(*, username: str, password: str, email: str = "", plan: Plan | None = None,
                is_staff: bool = False):  # fmt: skip
    User = get_user_model()
    user = User(username=username, email=email, plan=plan, is_staff=is_staff, is_superuser=is_staff)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    return user


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

_RATE = re.compile(r"(\d+)/(\d*)([smhd])")
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
