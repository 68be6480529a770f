"""Create the local admin user and its API token once; print the credentials every time.

The generated password is kept in var/ (git-ignored, mode 600) so `make run` can show it again.
"""

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create the admin user (DJANGO_ADMIN_USER / DJANGO_ADMIN_PASSWORD) and print its credentials and API token."

    def handle(self, *args, **options):
        username = os.environ.get("DJANGO_ADMIN_USER", "admin")
        secret_file = settings.VAR_DIR / "admin-password.txt"
        given = os.environ.get("DJANGO_ADMIN_PASSWORD")
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True, "email": "admin@localhost"}
        )
        if created or given:
            # Only a new user or an explicit DJANGO_ADMIN_PASSWORD sets the password: a password
            # changed in the admin is never silently reset.
            password = given or secrets.token_urlsafe(12)
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
            secret_file.write_text(password + "\n")
            secret_file.chmod(0o600)
        stored = secret_file.read_text().strip() if secret_file.exists() else ""
        password = stored if stored and user.check_password(stored) else "(changed since; set DJANGO_ADMIN_PASSWORD to reset)"
        token, _ = Token.objects.get_or_create(user=user)
        port = settings.ML_API_PORT
        self.stdout.write(self.style.SUCCESS("InvestML admin user ready"))
        self.stdout.write(f"  admin:     http://127.0.0.1:{port}/admin/   user {username}   password {password}")
        self.stdout.write(f"  API token: {token.key}")
