"""Project middleware that is not an app's: Django's message storage made lazy."""

from __future__ import annotations

from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.utils.functional import SimpleLazyObject, empty


class LazyMessageMiddleware(MessageMiddleware):
    """Django's ``MessageMiddleware``, but the storage is built on first use. Django builds it (a
    cookie and a session storage) on every request, and saves it on every response; the API's
    requests never touch messages, and building it was about 3% of a ``POST /predict``. A storage
    never used has nothing to save: Django's ``update`` stores only read or added messages."""

    def process_request(self, request):
        request._messages = SimpleLazyObject(lambda: default_storage(request))

    def process_response(self, request, response):
        storage = getattr(request, "_messages", None)
        if isinstance(storage, SimpleLazyObject) and storage._wrapped is empty:
            return response
        return super().process_response(request, response)
