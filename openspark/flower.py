"""`make flower`: Flower (Celery's web monitor) on the broker of the running `make run`.

The broker is REDIS_URL when set, else the one `make run` left in var/redis.url. Flower asks
for HTTP basic auth: user FLOWER_USER (default "admin"), password FLOWER_PASSWORD, or one
generated on the first start, printed once and kept in var/flower.password (0600). It listens
on 127.0.0.1:5555 unless FLOWER_ADDRESS / FLOWER_PORT say otherwise (Flower reads those
itself). The credentials reach Flower through its FLOWER_BASIC_AUTH variable, not the command
line, so they do not show in the process list."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _say(message: str) -> None:
    print(f"[flower] {message}", flush=True)


def broker_url(var_dir: Path) -> str | None:
    if url := os.environ.get("REDIS_URL"):
        return url
    saved = var_dir / "redis.url"
    return saved.read_text().strip() if saved.exists() else None


def password_get(var_dir: Path) -> tuple[str, bool]:
    """(password, whether it was generated now)."""
    if password := os.environ.get("FLOWER_PASSWORD"):
        return password, False
    saved = var_dir / "flower.password"
    if saved.exists():
        return saved.read_text().strip(), False
    password = secrets.token_urlsafe(18)
    var_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(password + "\n")
    return password, True


def main() -> int:
    var_dir = Path(os.environ.get("OPENSPARK_VAR_DIR", ROOT / "var")).resolve()
    url = broker_url(var_dir)
    if not url:
        _say("no broker: start `make run` first (it writes var/redis.url), or set REDIS_URL")
        return 1
    user = os.environ.get("FLOWER_USER", "admin")
    password, generated = password_get(var_dir)
    if ":" in user or "," in user + password:  # Flower splits its option on both
        _say("FLOWER_USER may not contain ':' or ',', nor FLOWER_PASSWORD ','")
        return 1
    env = dict(os.environ, REDIS_URL=url, FLOWER_BASIC_AUTH=f"{user}:{password}")
    # Flower serves its own /metrics from its own process; it is not one of the app's.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.setdefault("DJANGO_SETTINGS_MODULE", "openspark.settings.local")
    env.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    env.setdefault("FLOWER_PORT", "5555")
    _say(f"Flower at http://{env['FLOWER_ADDRESS']}:{env['FLOWER_PORT']}/ (user {user})")
    if generated:
        _say(f"password (shown once, kept in {var_dir / 'flower.password'}): {password}")
    else:
        _say("password: FLOWER_PASSWORD, or the one in var/flower.password")
    os.chdir(ROOT)
    os.execve(sys.executable, [sys.executable, "-m", "celery", "-A", "openspark", "flower"], env)


if __name__ == "__main__":
    sys.exit(main())
