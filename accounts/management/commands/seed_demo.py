"""Demo accounts for `make run`: one user per plan tier plus a staff user.

Passwords are random and printed once, when the users are created; later runs reuse them."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from accounts.services import user_create
from throttling.models import Plan

DEMO_USERS = [
    ("free", Plan.Tier.FREE, False),
    ("pro", Plan.Tier.PRO, False),
    ("enterprise", Plan.Tier.ENTERPRISE, False),
    ("admin", Plan.Tier.ENTERPRISE, True),
]


class Command(BaseCommand):
    help = "Create the demo users (one per plan tier + staff) if they do not exist."

    def handle(self, *args, **options):
        User = get_user_model()
        created = []
        for username, tier, staff in DEMO_USERS:
            if User.objects.filter(username=username).exists():
                continue
            password = secrets.token_urlsafe(9)
            user_create(
                username=username,
                password=password,
                email=f"{username}@example.com",
                plan=Plan.objects.get(tier=tier),
                is_staff=staff,
            )
            created.append((username, tier, staff, password))
        if not created:
            self.stdout.write(
                "Demo users exist (passwords were printed on the first run; reset one with "
                "`manage.py changepassword <name>`)."
            )
            return
        self.stdout.write(self.style.SUCCESS("Demo users (passwords are shown only this once):"))
        for username, tier, staff, password in created:
            role = "staff, admin site" if staff else f"{tier} plan"
            self.stdout.write(f"  {username:<11} {password:<14} ({role})")
