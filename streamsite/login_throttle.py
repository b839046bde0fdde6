"""django-axes' backend for Django's async login too.

django-axes 8.3 has no ``aauthenticate``, so ``django.contrib.auth.aauthenticate`` (the async
``alogin`` path) would fail on its ``AxesStandaloneBackend``; this one checks the lockout the
same way on both paths (its public ``authenticate``, in a thread for the async one). A call
without a request (Django's test client's ``alogin``, code checking a password) is no web login
from a client address: nothing to throttle, the next backend decides.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from axes.backends import AxesStandaloneBackend


class AxesLockoutBackend(AxesStandaloneBackend):
    async def aauthenticate(self, request, **credentials):
        if request is None:
            return None
        return await sync_to_async(self.authenticate)(request, **credentials)
