from __future__ import annotations

import datetime as dt
import ipaddress
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from openspark.core.state import on_reset

from .models import AccessListEntry, ExtraRule, LayerPolicy, Plan, TokenUsage


def month_start(now: dt.datetime | None = None) -> dt.date:
    now = now or timezone.now()
    return now.date().replace(day=1)


def next_month_start(now: dt.datetime | None = None) -> dt.datetime:
    """When this month's token quota resets: midnight UTC on the first of next month."""
    first = month_start(now)
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return dt.datetime.combine(following, dt.time.min, tzinfo=dt.UTC)


def plan_default() -> Plan:
    plan = Plan.objects.filter(is_default=True).first()
    return plan or Plan.objects.get(tier=Plan.Tier.FREE)


def plan_for_user(user) -> Plan:
    """The user's own plan, else the default one (new users are on free)."""
    if getattr(user, "plan_id", None):
        return user.plan
    return plan_default()


def tokens_used_this_month(*, user) -> int:
    usage = TokenUsage.objects.filter(user=user, month=month_start()).first()
    return usage.total_tokens if usage else 0


def token_usage_this_month(*, user_id: int) -> tuple[int, int]:
    """(tokens used, tokens reserved for replies in flight) this month."""
    usage = TokenUsage.objects.filter(user_id=user_id, month=month_start()).first()
    return (usage.total_tokens, usage.reserved_tokens) if usage else (0, 0)


def quota_status_get(*, user) -> dict:
    """The user's monthly LLM token quota: used, quota (0 = unlimited), remaining, reset."""
    quota = plan_for_user(user).monthly_token_quota
    used = tokens_used_this_month(user=user)
    return {
        "used_this_month": used,
        "quota": quota,
        "remaining": max(0, quota - used) if quota else None,
        "exceeded": bool(quota) and used >= quota,
        "resets_at": next_month_start(),
    }


# --- Limiter configuration snapshot ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanLimits:
    id: int
    tier: str
    requests_per_minute: int
    endpoint_limits: dict[str, int]
    monthly_token_quota: int = 0  # LLM tokens; 0 = unlimited


@dataclass(frozen=True, slots=True)
class LayerSettings:
    limit: int | None
    algorithm: str = "token_bucket"
    shadow: bool = False
    fail_closed: bool = False
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ExtraRuleSettings:
    name: str
    path_prefix: str
    plan_id: int | None
    key: str
    limit: int
    period: int
    algorithm: str
    shadow: bool
    fail_closed: bool


@dataclass(frozen=True)
class LimiterConfig:
    plans: dict[int, PlanLimits]
    default_plan: PlanLimits
    layers: dict[str, LayerSettings]
    rules: tuple[ExtraRuleSettings, ...] = ()
    allow_users: frozenset[int] = frozenset()
    deny_users: frozenset[int] = frozenset()
    allow_networks: tuple = ()
    deny_networks: tuple = ()
    loaded_at: float = field(default_factory=time.monotonic)

    def plan(self, plan_id: int | None) -> PlanLimits:
        return self.plans.get(plan_id) or self.default_plan

    def layer(self, name: str) -> LayerSettings:
        return self.layers.get(name) or LayerSettings(limit=None)


class _ConfigCache:
    """The limiter reads limits, rules and lists from this per-process snapshot instead of the
    database on every request. Saves in the admin clear it in the saving process at once
    (signals) and reach other processes within THROTTLE_CONFIG_TTL seconds."""

    def __init__(self) -> None:
        self._config: LimiterConfig | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def get(self) -> LimiterConfig:
        config = self._config
        if config is not None and time.monotonic() < self._expires:
            return config
        with self._lock:
            if self._config is None or time.monotonic() >= self._expires:
                self._config = _config_load()
                self._expires = time.monotonic() + settings.THROTTLE_CONFIG_TTL
            return self._config

    def clear(self) -> None:
        self._expires = 0.0


_config_cache = _ConfigCache()
on_reset(_config_cache.clear, derived_from_settings=True)  # rules read THROTTLE_*


def limiter_config_get() -> LimiterConfig:
    return _config_cache.get()


def limiter_config_invalidate() -> None:
    _config_cache.clear()


def _plan_limits(plan: Plan) -> PlanLimits:
    return PlanLimits(
        plan.id, plan.tier, plan.requests_per_minute, plan.endpoint_limits, plan.monthly_token_quota
    )


def _config_load() -> LimiterConfig:
    plans = {plan.id: _plan_limits(plan) for plan in Plan.objects.all()}
    default = next((p for p in Plan.objects.filter(is_default=True)), None)
    default_limits = (
        plans[default.id]
        if default
        else next((p for p in plans.values() if p.tier == Plan.Tier.FREE), None)
        # No plan rows at all (a flushed test database): the plan's own defaults (free's).
        or PlanLimits(0, "free", 100, Plan().endpoint_limits)
    )
    layers = {
        policy.layer: LayerSettings(
            limit=policy.limit,
            algorithm=policy.algorithm,
            shadow=policy.shadow,
            fail_closed=policy.fail_mode == "closed",
            enabled=policy.enabled,
        )
        for policy in LayerPolicy.objects.all()
    }
    rules = tuple(
        ExtraRuleSettings(
            name=rule.name,
            path_prefix=rule.path_prefix,
            plan_id=rule.plan_id,
            key=rule.key,
            limit=rule.limit,
            period=rule.period_seconds,
            algorithm=rule.algorithm,
            shadow=rule.shadow,
            fail_closed=rule.fail_mode == "closed",
        )
        for rule in ExtraRule.objects.filter(enabled=True)
    )
    entries = AccessListEntry.objects.filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    ).values_list("kind", "user_id", "network")
    users: dict[str, set[int]] = {"allow": set(), "deny": set()}
    networks: dict[str, list] = {"allow": [], "deny": []}
    for kind, user_id, network in entries:
        if user_id:
            users[kind].add(user_id)
        elif network:
            try:
                networks[kind].append(ipaddress.ip_network(network, strict=False))
            except ValueError:
                continue  # validated on save; a hand-edited bad row must not break requests
    return LimiterConfig(
        plans=plans,
        default_plan=default_limits,
        layers=layers,
        rules=rules,
        allow_users=frozenset(users["allow"]),
        deny_users=frozenset(users["deny"]),
        allow_networks=tuple(networks["allow"]),
        deny_networks=tuple(networks["deny"]),
    )


# --- Monitoring -----------------------------------------------------------------------------


def _parse_signature(field: str) -> tuple[bool, list[tuple[str, str]], int | None]:
    """'a|global,plan!|37' → (allowed, [(layer, flag)], latency bucket); see limiter.lua."""
    outcome, body, bucket = [*field.split("|"), "", ""][:3]
    parts = []
    for item in body.split(","):
        if item and item[-1] in "!~-":
            parts.append((item[:-1], item[-1]))
        elif item:
            parts.append((item, ""))
    return outcome == "a", parts, int(bucket) if bucket.isdigit() else None


def limiter_stats_get(*, minutes: int = 10) -> dict:
    """Allowed/denied/near-limit/shadow-denied per layer per minute, top limited users and
    IPs, limiter latency percentiles (from all processes' reports) and recent alerts.
    Counters are batched per process and written once a second (limiter.py), so the last
    second of other processes may not be in yet. Raises redis.RedisError when Redis is
    unreachable."""
    from django.contrib.auth import get_user_model

    from .limiter import key_prefix, latency_bucket_upper, limiter_redis
    from .models import Alert

    User = get_user_model()
    prefix = key_prefix()
    current = int(time.time() // 60)
    window = list(range(current - minutes + 1, current + 1))
    pipe = limiter_redis().pipeline(transaction=False)
    for minute in window:
        pipe.hgetall(f"{prefix}stats:{minute}")
        pipe.zrevrange(f"{prefix}top:{minute}", 0, 49, withscores=True)
    replies = pipe.execute()

    per_minute, totals = [], {}
    latency: dict[int, int] = {}
    top: dict[str, int] = {}
    for index, minute in enumerate(window):
        counters, top_minute = replies[2 * index], replies[2 * index + 1]
        layers: dict[str, dict[str, int]] = {}
        requests = {"allowed": 0, "denied": 0}
        for raw_field, raw_count in counters.items():
            allowed, parts, bucket = _parse_signature(raw_field.decode())
            count = int(raw_count)
            if bucket is not None:
                latency[bucket] = latency.get(bucket, 0) + count
            requests["allowed" if allowed else "denied"] += count
            for layer, flag in parts:
                row = layers.setdefault(
                    layer, {"allowed": 0, "denied": 0, "near_limit": 0, "shadow_denied": 0}
                )
                if flag == "-":
                    row["denied"] += count
                elif flag == "~":
                    row["shadow_denied"] += count
                if allowed and flag != "~":
                    row["allowed"] += count
                if flag == "!":
                    row["near_limit"] += count
        for layer, row in layers.items():
            total = totals.setdefault(layer, dict.fromkeys(row, 0))
            for name, value in row.items():
                total[name] += value
        for member, score in top_minute:
            top[member.decode()] = top.get(member.decode(), 0) + int(score)
        per_minute.append(
            {
                "minute": dt.datetime.fromtimestamp(minute * 60, tz=dt.UTC),
                "requests": requests,
                "layers": layers,
            }
        )

    ranked = sorted(top.items(), key=lambda item: -item[1])
    user_counts = [(int(who[2:]), n) for who, n in ranked if who.startswith("u:")][:10]
    names = dict(
        User.objects.filter(pk__in=[uid for uid, _n in user_counts]).values_list("pk", "username")
    )
    return {
        "minutes": per_minute,
        "totals": totals,
        "top_limited_users": [
            {"user_id": uid, "username": names.get(uid, ""), "denied": n} for uid, n in user_counts
        ],
        "top_limited_ips": [
            {"ip": who[3:], "denied": n} for who, n in ranked if who.startswith("ip:")
        ][:10],
        "latency_us": _latency_summary(latency, latency_bucket_upper),
        "alerts": list(
            Alert.objects.order_by("-last_seen").values(
                "id",
                "kind",
                "message",
                "details",
                "count",
                "first_seen",
                "last_seen",
                "acknowledged",
            )[:20]
        ),
    }


def _latency_summary(histogram: dict[int, int], upper) -> dict:
    count = sum(histogram.values())
    if not count:
        return {"count": 0, "p50": None, "p99": None}
    result = {"count": count}
    for name, quantile in (("p50", 0.5), ("p99", 0.99)):
        seen = 0
        for bucket in sorted(histogram):
            seen += histogram[bucket]
            if seen >= quantile * count:
                result[name] = round(upper(bucket))  # upper bound of the bucket, µs
                break
    return result
