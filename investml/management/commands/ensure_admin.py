"""Create the local admin user and its API token once; print the credentials only then.

The generated password is kept in var/admin-password.txt (git-ignored), created with mode 600 from
its first byte; later runs say where it is, never print it again. A password given in
DJANGO_ADMIN_PASSWORD is set (and kept in that file), not echoed.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only at every moment: a new file is born with
    mode 600 (whatever the umask), an old one is emptied and set to 600 before the text goes in; a
    symbolic link planted at ``path`` is refused (O_NOFOLLOW)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(fd, 0o600)
        handle.write(text)


class Command(BaseCommand):
    help = ("Create the admin user (DJANGO_ADMIN_USER / DJANGO_ADMIN_PASSWORD) and its API token; print them "
            "only when they are created.")

    def handle(self, *args, **options):
        username = settings.DJANGO_ADMIN_USER
        secret_file = Path(settings.VAR_DIR) / "admin-password.txt"
        given = settings.DJANGO_ADMIN_PASSWORD
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True, "email": "admin@localhost"}
        )
        password = None
        if created or given:
            # Only a new user or an explicit DJANGO_ADMIN_PASSWORD sets the password: a password
            # changed in the admin is never silently reset.
            password = given or secrets.token_urlsafe(12)
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
            write_secret(secret_file, password + "\n")
        token, token_created = Token.objects.get_or_create(user=user)
        port = settings.ML_API_PORT
        admin_url = f"http://127.0.0.1:{port}/admin/"
        if created:
            self.stdout.write(self.style.SUCCESS("InvestML admin user created (shown this once)"))
            self.stdout.write(f"  admin:     {admin_url}   user {username}   password {password}")
        elif given:
            self.stdout.write(self.style.SUCCESS(f"InvestML admin user {username}: password set from DJANGO_ADMIN_PASSWORD"))
        else:
            self.stdout.write(self.style.SUCCESS(f"InvestML admin user {username} already exists"))
        if password is not None:
            self.stdout.write(f"  password file: {secret_file} (mode 600)")
        elif not secret_file.exists():
            self.stdout.write(f"  password file: none at {secret_file}; set DJANGO_ADMIN_PASSWORD to set one")
        elif user.check_password(secret_file.read_text().strip()):
            self.stdout.write(f"  password: in {secret_file} (mode 600)")
        else:
            self.stdout.write(f"  password: changed in the admin since {secret_file} was written; set "
                              "DJANGO_ADMIN_PASSWORD to reset it")
        if token_created:
            self.stdout.write(f"  API token: {token.key}")
        else:
            self.stdout.write(f"  API token: see {admin_url}authtoken/tokenproxy/ or "
                              f"`python manage.py drf_create_token {username}`")
