"""Which rules a caller is under: from the limiter configuration snapshot (plans, layer
policies, extra rules, allow/deny lists), the caller's identity, the path and the layers the
view's throttle classes name."""

from __future__ import annotations

import ipaddress
import re

from django.conf import settings

from .identity import Identity
from .limiter import Rule
from .selectors import LimiterConfig

ALL_LAYERS = frozenset({"global", "ip", "plan", "endpoint"})
ENDPOINT_GROUPS = (
    ("/api/v1/conversations", "conversations"),
    ("/api/v1/messages", "messages"),
    ("/api/v1/knowledge", "knowledge"),
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What a client repeats while it waits: a reply's status or stream, a task's state, a
# conversation's history. Read with a safe method, these spend `polling`, never `messages`.
POLLING_PATH = re.compile(r"/api/v1/(?:messages/|tasks/|conversations/[^/]+/messages/)")
# A request standing for each group, for the status of every group.
GROUP_REQUESTS = (
    *((f"{prefix}/", "POST") for prefix, _group in ENDPOINT_GROUPS),
    ("/api/v1/messages/", "GET"),
)


def endpoint_group_for(*, path: str, method: str) -> str | None:
    """The endpoint group a request spends: `polling` for safe-method reads of messages and
    tasks, else the group of its path prefix (so `messages` counts sending: the writes)."""
    if method in SAFE_METHODS and POLLING_PATH.match(path):
        return "polling"
    for prefix, group in ENDPOINT_GROUPS:
        if path.startswith(prefix):
            return group
    return None


def _listed(identity: Identity, users, networks) -> bool:
    if identity.user_id and identity.user_id in users:
        return True
    if not networks:
        return False
    try:
        address = ipaddress.ip_network(identity.ip, strict=False)
    except ValueError:
        return False
    return any(address.version == net.version and address.subnet_of(net) for net in networks)


def listed_get(*, config: LimiterConfig, identity: Identity) -> str | None:
    """ "deny", "allow" or None: whether the caller is on the deny- or allow-list."""
    if _listed(identity, config.deny_users, config.deny_networks):
        return "deny"
    if _listed(identity, config.allow_users, config.allow_networks):
        return "allow"
    return None


def _rule(layer_name: str, who: str, limit: int, layer) -> Rule:
    return Rule(layer_name, who, limit, 60, layer.algorithm, layer.shadow, layer.fail_closed)


def limiter_rules_build(
    *, config: LimiterConfig, identity: Identity, path: str, method: str, layers: frozenset[str]
) -> list[Rule] | None:
    """The rules a request must pass, for one round trip; None when the caller is
    deny-listed. Allow-listed callers keep only the global layer."""
    listed = listed_get(config=config, identity=identity)
    if listed == "deny":
        return None
    rules: list[Rule] = []
    layer = config.layer("global")
    if "global" in layers and layer.enabled:
        rules.append(_rule("global", "all", layer.limit or settings.THROTTLE_GLOBAL_LIMIT, layer))
    if listed == "allow":
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
        rules.extend(_endpoint_rules(config=config, identity=identity, path=path, method=method))
    return rules


def _endpoint_rules(
    *, config: LimiterConfig, identity: Identity, path: str, method: str
) -> list[Rule]:
    plan = config.plan(identity.plan_id)
    who = identity.who
    rules = []
    group = endpoint_group_for(path=path, method=method)
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


def limiter_status_rules(*, config: LimiterConfig, identity: Identity) -> list[Rule] | None:
    """Every rule the caller is under, every endpoint group included; None when
    deny-listed."""
    rules = limiter_rules_build(
        config=config, identity=identity, path="", method="GET", layers=ALL_LAYERS
    )
    if rules is None or listed_get(config=config, identity=identity) == "allow":
        return rules
    for path, method in GROUP_REQUESTS:
        for rule in _endpoint_rules(config=config, identity=identity, path=path, method=method):
            if rule not in rules:
                rules.append(rule)
    return rules
