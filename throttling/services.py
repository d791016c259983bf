"""The limiter service used by the DRF throttle classes, the rate-limit middleware and the
chat websocket consumer, plus limiter alerts. The monthly token quota is in quota.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connections
from django.db.models import F
from django.utils import timezone

from openspark.core.memo import memoised

from .limiter import (
    LimitDecision,
    PeekRead,
    Rule,
    health,
    limiter_consume,
    limiter_peek_prefetch,
    limiter_peek_result,
)
from .models import Alert
from .selectors import (
    LimiterConfig,
    limiter_config_get,
)

logger = logging.getLogger(__name__)

ALL_LAYERS = frozenset({"global", "ip", "plan", "endpoint"})
ENDPOINT_GROUPS = (
    ("/api/v1/conversations", "conversations"),
    ("/api/v1/messages", "messages"),
    ("/api/v1/knowledge", "knowledge"),
)
# Websocket `message.send` frames spend the same budget as POST /api/v1/messages.
WEBSOCKET_MESSAGE_PATH = "/api/v1/messages/"


# --- Identity -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: int | None
    plan_id: int | None
    ip: str

    @property
    def who(self) -> str:
        return f"u:{self.user_id}" if self.user_id else f"ip:{self.ip}"


_normalized: dict[str, str | None] = {}


def ip_normalize(raw: str) -> str | None:
    """A canonical address; IPv6 clients are keyed by their /64, the block one host gets.
    Memoised: parsing costs ~6 µs and runs on every API request, for a few distinct peers."""
    return memoised(_normalized, raw, lambda: _ip_normalize(raw))


def _ip_normalize(raw: str) -> str | None:
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    if address.version == 6:
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def client_ip(request) -> str:
    """The client's address behind THROTTLE_TRUSTED_PROXY_COUNT reverse proxies. Each proxy
    appends the peer it saw to X-Forwarded-For, so the client is the Nth entry from the
    right; entries further left are whatever the client sent and are never trusted."""
    peer = request.META.get("REMOTE_ADDR", "") or ""
    proxies = settings.THROTTLE_TRUSTED_PROXY_COUNT
    if proxies > 0:
        forwarded = [p for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if p]
        if len(forwarded) >= proxies:
            ip = ip_normalize(forwarded[-proxies])
            if ip:
                return ip
    return ip_normalize(peer) or "unknown"


class _ApiKeyCache:
    """raw-key hash → (user id, plan id) for a few seconds, so resolving the caller's identity
    for the limiter does not add a database query to every API-key request. Unknown keys are
    cached too (as anonymous), so a flood of bad keys cannot turn into a flood of queries."""

    TTL = 5.0
    _MAX = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, int | None, int | None]] = {}

    def get(self, raw_key: str) -> tuple[int | None, int | None]:
        from accounts.authentication import api_key_resolve
        from accounts.keys import api_key_hash

        digest = api_key_hash(raw_key)
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is not None and entry[0] > now:
            return entry[1], entry[2]
        key = api_key_resolve(raw_key)
        user_id, plan_id = (key.user_id, key.user.plan_id) if key else (None, None)
        if len(self._entries) >= self._MAX:
            self._entries.clear()
        self._entries[digest] = (now + self.TTL, user_id, plan_id)
        return user_id, plan_id

    def peek(self, raw_key: str) -> tuple[int | None, int | None] | None:
        """What `get` would answer without looking anything up; None when not known."""
        from accounts.keys import api_key_hash

        entry = self._entries.get(api_key_hash(raw_key))
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1], entry[2]

    def clear(self) -> None:
        self._entries.clear()


api_key_cache = _ApiKeyCache()


def _bearer_key(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def identity_resolve(request, *, user=None) -> Identity:
    """Who is asking, cheaply and before authentication runs: a valid API key or session
    user, else nobody (the IP layer). A bad API key counts as nobody, so failed-auth traffic
    is limited per IP. `user`: an already-authenticated user (the DRF throttle path)."""
    ip = client_ip(request)
    if user is None:
        # DRF's test client (force_authenticate) puts the user here, ahead of the middleware.
        user = getattr(request, "_force_auth_user", None)
    if user is None:
        raw_key = _bearer_key(request)
        if raw_key is not None:
            user_id, plan_id = api_key_cache.get(raw_key)
            return Identity(user_id, plan_id, ip)
        user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return Identity(user.pk, getattr(user, "plan_id", None), ip)
    return Identity(None, None, ip)


def endpoint_group_for_path(path: str) -> str | None:
    for prefix, group in ENDPOINT_GROUPS:
        if path.startswith(prefix):
            return group
    return None


# --- Rules ----------------------------------------------------------------------------------


def _listed(config: LimiterConfig, identity: Identity, users, networks) -> bool:
    if identity.user_id and identity.user_id in users:
        return True
    if not networks:
        return False
    try:
        address = ipaddress.ip_network(identity.ip, strict=False)
    except ValueError:
        return False
    return any(address.version == net.version and address.subnet_of(net) for net in networks)


def limiter_rules_build(
    *, config: LimiterConfig, identity: Identity, path: str, layers: frozenset[str]
) -> tuple[Rule, ...] | None:
    """The rules a request must pass, for one round trip; None when the caller is
    deny-listed. Allow-listed callers keep only the global layer. Memoised per snapshot."""

    def build() -> tuple[Rule, ...] | None:
        rules = _rules_build(config=config, identity=identity, path=path, layers=layers)
        return None if rules is None else tuple(rules)

    return memoised(config.memo, (identity, path, layers), build)


def _rules_build(
    *, config: LimiterConfig, identity: Identity, path: str, layers: frozenset[str]
) -> list[Rule] | None:
    if _listed(config, identity, config.deny_users, config.deny_networks):
        return None
    allow_listed = _listed(config, identity, config.allow_users, config.allow_networks)
    rules: list[Rule] = []
    layer = config.layer("global")
    if "global" in layers and layer.enabled:
        limit = layer.limit or settings.THROTTLE_GLOBAL_LIMIT
        rules.append(_rule("global", "all", limit, layer))
    if allow_listed:
        return rules
    plan = config.plan(identity.plan_id)
    who = identity.who
    if identity.user_id is None:
        layer = config.layer("ip")
        if "ip" in layers and layer.enabled:
            rules.append(_rule("ip", who, layer.limit or settings.THROTTLE_IP_LIMIT, layer))
    else:
        layer = config.layer("plan")
        if "plan" in layers and layer.enabled:
            rules.append(_rule("plan", who, plan.requests_per_minute, layer))
    if "endpoint" in layers:
        group = endpoint_group_for_path(path)
        layer = config.layer("endpoint")
        if group and layer.enabled and group in plan.endpoint_limits:
            rules.append(_rule(f"endpoint:{group}", who, plan.endpoint_limits[group], layer))
        for extra in config.rules:
            if extra.plan_id is not None and extra.plan_id != plan.id:
                continue
            if not path.startswith(extra.path_prefix):
                continue
            extra_who = {"global": "all", "ip": f"ip:{identity.ip}"}.get(extra.key, who)
            rules.append(
                Rule(
                    f"rule:{extra.name}",
                    extra_who,
                    extra.limit,
                    extra.period,
                    extra.algorithm,
                    extra.shadow,
                    extra.fail_closed,
                )
            )
    return rules


def _rule(layer_name: str, who: str, limit: int, layer) -> Rule:
    return Rule(layer_name, who, limit, 60, layer.algorithm, layer.shadow, layer.fail_closed)


BLOCKED = LimitDecision(allowed=False, layer="blocked", code="blocked")


def limiter_check(
    *,
    identity: Identity,
    path: str,
    layers: frozenset[str],
    also=(),
    config: LimiterConfig | None = None,
) -> LimitDecision:
    """Check and consume every applicable layer in one Redis round trip, all-or-nothing.
    `also`: reads to send in the same round trip (see `limiter_consume`). `config`: a
    snapshot the caller already holds (code on the event loop cannot load one)."""
    config = config or limiter_config_get()
    rules = limiter_rules_build(config=config, identity=identity, path=path, layers=layers)
    if rules is None:
        return BLOCKED
    decision = limiter_consume(rules=rules, who=identity.who, also=also)
    _monitor(decision)
    return decision


def limiter_check_request(*, request, layers: frozenset[str] = ALL_LAYERS, user=None):
    """The request's check. A request with an API key also reads the key's cached row in the
    same round trip and leaves it for authentication (`request.api_key_prefetch`)."""
    also = ()
    raw_key = _bearer_key(request) if user is None else None
    if raw_key is not None:
        from accounts.authentication import api_key_prefetch

        prefetch = api_key_prefetch(raw_key)
        request.api_key_prefetch = (raw_key, prefetch)
        also = (prefetch,) if prefetch is not None else ()
    return limiter_check(
        identity=identity_resolve(request, user=user), path=request.path, layers=layers, also=also
    )


def limiter_check_websocket(*, user, ip: str) -> LimitDecision:
    """For the chat consumer's `message.send` frames: the same global, plan and `messages`
    budgets as POST /api/v1/messages, in one round trip. Sync; wrap it with
    database_sync_to_async in async code (it may read the limiter configuration)."""
    if user is not None and user.is_authenticated:
        identity = Identity(user.pk, getattr(user, "plan_id", None), ip_normalize(ip) or ip)
    else:
        identity = Identity(None, None, ip_normalize(ip) or ip or "unknown")
    return limiter_check(identity=identity, path=WEBSOCKET_MESSAGE_PATH, layers=ALL_LAYERS)


def listed_get(*, config: LimiterConfig, identity: Identity) -> str | None:
    """ "deny", "allow" or None: whether the caller is on the deny- or allow-list."""
    if _listed(config, identity, config.deny_users, config.deny_networks):
        return "deny"
    if _listed(config, identity, config.allow_users, config.allow_networks):
        return "allow"
    return None


def _status_rules(*, config: LimiterConfig, identity: Identity) -> tuple[Rule, ...] | None:
    """Every rule the caller is under (every endpoint group included); None when
    deny-listed. Memoised per snapshot."""

    def build() -> tuple[Rule, ...] | None:
        rules = limiter_rules_build(config=config, identity=identity, path="", layers=ALL_LAYERS)
        return None if rules is None else _with_endpoint_groups(config, identity, list(rules))

    return memoised(config.memo, ("status", identity), build)


def _with_endpoint_groups(config: LimiterConfig, identity: Identity, rules: list[Rule]):
    for prefix, _group in ENDPOINT_GROUPS:
        for rule in (
            limiter_rules_build(
                config=config,
                identity=identity,
                path=prefix + "/",
                layers=frozenset({"endpoint"}),
            )
            or []
        ):
            if rule not in rules:
                rules.append(rule)
    return tuple(rules)


def limiter_status_get(*, identity: Identity) -> list | None:
    """The caller's budget per layer (every endpoint group included), without consuming
    anything, in one round trip. [] when deny-listed; None when Redis is unreachable."""
    rules = _status_rules(config=limiter_config_get(), identity=identity)
    if rules is None:
        return []
    decision = limiter_consume(rules=rules, who=identity.who, peek=True)
    return None if decision.degraded else list(decision.states)


def usage_from_states(states) -> dict:
    return {
        state.layer: {
            "limit": state.limit,
            "used": state.limit - state.remaining,
            "remaining": state.remaining,
            "reset": round(state.reset, 3),
        }
        for state in states
    }


def limiter_usage_get(*, request, user=None) -> dict:
    """What `GET /api/v1/me/` shows: per layer, used and left of this minute's budget."""
    return usage_from_states(
        limiter_status_get(identity=identity_resolve(request, user=user)) or []
    )


def limiter_usage_prefetch(*, config: LimiterConfig, identity: Identity) -> PeekRead | None:
    """`limiter_usage_get`'s read, packed to ride the request's check (the edge's `me/`)."""
    rules = _status_rules(config=config, identity=identity)
    return limiter_peek_prefetch(rules) if rules else None


def limiter_usage_prefetched(read: PeekRead | None) -> dict | None:
    decision = limiter_peek_result(read)
    return None if decision is None else usage_from_states(decision.states)


# --- Monitoring and alerts ------------------------------------------------------------------


class _DenyRate:
    """This process's allowed/denied counts in the current minute, for the spike alert."""

    def __init__(self) -> None:
        self.minute = 0
        self.total = 0
        self.denied = 0
        self.lock = threading.Lock()

    def record(self, allowed: bool) -> tuple[int, int]:
        minute = int(time.time() // 60)
        with self.lock:
            if minute != self.minute:
                self.minute, self.total, self.denied = minute, 0, 0
            self.total += 1
            self.denied += 0 if allowed else 1
            return self.total, self.denied


_deny_rate = _DenyRate()


def _monitor(decision: LimitDecision) -> None:
    if decision.degraded:
        if decision.code == "dependency_unavailable":
            alert_raise(
                kind=Alert.Kind.FAIL_CLOSED,
                message="Rate limiter cannot reach Redis; fail-closed layers refuse requests.",
                details={"error": health.last_error, "layer": decision.layer},
            )
        else:
            alert_raise(
                kind=Alert.Kind.FAIL_OPEN,
                message="Rate limiter cannot reach Redis; using per-process fallback buckets.",
                details={"error": health.last_error},
            )
        return
    for state in decision.states:
        if state.layer == "global" and state.remaining < state.limit * (
            settings.THROTTLE_NEAR_LIMIT_RATIO
        ):
            alert_raise(
                kind=Alert.Kind.GLOBAL_NEAR_LIMIT,
                message="The global rate limit is nearly used up.",
                details={"limit": state.limit, "remaining": state.remaining},
            )
    total, denied = _deny_rate.record(decision.allowed)
    if (
        not decision.allowed
        and denied >= settings.THROTTLE_ALERT_DENY_MIN
        and denied >= total * settings.THROTTLE_ALERT_DENY_RATIO
    ):
        alert_raise(
            kind=Alert.Kind.DENY_SPIKE,
            message="Many requests are being refused by the rate limiter.",
            details={"denied": denied, "total": total, "last_layer": decision.layer},
        )


_alerts_raised: dict[str, float] = {}
_alerts_lock = threading.Lock()


def alert_raise(*, kind: str, message: str, details: dict | None = None) -> None:
    """Log and record an alert for staff, de-duplicated: within THROTTLE_ALERT_DEDUP_SECONDS
    a process writes one kind at most once, and the database row of the same kind is bumped
    (count, last_seen) rather than duplicated. Never raises: alerting must not break a
    request."""
    now = time.monotonic()
    window = settings.THROTTLE_ALERT_DEDUP_SECONDS
    with _alerts_lock:
        if _alerts_raised.get(kind, -math.inf) > now - window:
            return
        _alerts_raised[kind] = now
    logger.warning("Rate limiter alert %s: %s %s", kind, message, details or {})
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _alert_record(kind, message, details or {}, window)
        return
    # On the event loop (the edge, openspark/edge.py) the ORM may not run: record it from a
    # short-lived thread (alerts are rare and de-duplicated above).
    threading.Thread(
        target=_alert_record_in_thread, args=(kind, message, details or {}, window), daemon=True
    ).start()


def _alert_record(kind: str, message: str, details: dict, window: float) -> None:
    try:
        moment = timezone.now()
        updated = Alert.objects.filter(
            kind=kind, acknowledged=False, last_seen__gte=moment - dt.timedelta(seconds=window)
        ).update(count=F("count") + 1, last_seen=moment, details=details)
        if not updated:
            Alert.objects.create(kind=kind, message=message, details=details, last_seen=moment)
    except Exception:  # the database may be the thing that is down
        logger.exception("Could not record rate limiter alert %s", kind)


def _alert_record_in_thread(*args) -> None:
    try:
        _alert_record(*args)
    finally:
        connections.close_all()


def alerts_reset_dedup() -> None:
    """Forget which alerts this process raised (tests, and after staff acknowledge)."""
    with _alerts_lock:
        _alerts_raised.clear()
