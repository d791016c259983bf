"""The limiter service used by the DRF throttle classes, the rate-limit middleware and the
chat websocket consumer. The monthly token quota is in quota.py."""

from __future__ import annotations

from .alerts import decision_monitor
from .identity import Identity, identity_for, request_identity, scope_client_ip
from .limiter import LimitDecision, limiter_consume
from .rules import ALL_LAYERS, ENDPOINT_GROUPS, limiter_rules_build, limiter_status_rules
from .selectors import limiter_config_get

# Websocket frames spend the budget of the REST request they stand for (its endpoint group);
# a frame that stands for none (malformed, unknown type) spends the global and plan layers.
WEBSOCKET_PATH = "/ws/chat/"


# --- Limiter checks -------------------------------------------------------------------------

BLOCKED = LimitDecision(allowed=False, layer="blocked", code="blocked")


def limiter_check(
    *, identity: Identity, path: str, method: str, layers: frozenset[str]
) -> LimitDecision:
    """Check and consume every applicable layer in one Redis round trip, all-or-nothing. A
    refusal of a signed-in caller names their plan's tier (for the error's message)."""
    config = limiter_config_get()
    rules = limiter_rules_build(
        config=config, identity=identity, path=path, method=method, layers=layers
    )
    if rules is None:
        return BLOCKED
    decision = limiter_consume(rules=rules, who=identity.who)
    decision_monitor(decision)
    if not decision.allowed and identity.user_id is not None:
        decision = decision._replace(plan_tier=config.plan(identity.plan_id).tier)
    return decision


def limiter_check_request(*, request, layers: frozenset[str] = ALL_LAYERS) -> LimitDecision:
    """The check of an HTTP request, as its authenticated caller (`request_identity`)."""
    return limiter_check(
        identity=request_identity(request),
        path=request.path,
        method=request.method,
        layers=layers,
    )


def limiter_check_websocket(*, scope, user, endpoint_group: str | None = "messages"):
    """For the chat consumer's frames: the global and plan budgets, and `endpoint_group`'s
    (`message.send` spends the same as POST /api/v1/messages: frames count as writes), in one
    round trip, as `user`
    (the socket's user as its session authenticates them now: `scope["user"]` is from the
    handshake). Sync; wrap it with database_sync_to_async in async code (it may read the
    limiter configuration)."""
    identity = identity_for(user=user, ip=scope_client_ip(scope))
    prefix = next((prefix for prefix, group in ENDPOINT_GROUPS if group == endpoint_group), None)
    path = f"{prefix}/" if prefix else WEBSOCKET_PATH
    return limiter_check(identity=identity, path=path, method="POST", layers=ALL_LAYERS)


def limiter_status_get(*, identity: Identity) -> list | None:
    """The caller's budget per layer (every endpoint group included), without consuming
    anything, in one round trip. [] when deny-listed; None when Redis is unreachable."""
    rules = limiter_status_rules(config=limiter_config_get(), identity=identity)
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


def limiter_usage_get(*, request) -> dict:
    """What `GET /api/v1/me/` shows: per layer, used and left of this minute's budget."""
    return usage_from_states(limiter_status_get(identity=request_identity(request)) or [])
