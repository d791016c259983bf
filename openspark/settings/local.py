"""Developer laptop / `make run`: embedded services, debug on."""

from .base import *  # noqa: F403
from .base import STATIC_ROOT, env

DEBUG = env.bool("DEBUG", default=True)

STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing folder
