from celery import shared_task
from django.db import connection


@shared_task(name="investml.ping")
def ping() -> dict:
    """Round trip through broker, worker and database: used by health checks and tests."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (one,) = cursor.fetchone()
    return {"pong": True, "database": connection.vendor, "db_ok": one == 1}
