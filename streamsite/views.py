from django.http import JsonResponse
from django.views.defaults import page_not_found


def not_found(request, exception=None):
    """JSON 404 under /api/ (clients parse it); Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"no such endpoint: {request.method} {request.path}"}, status=404)
    return page_not_found(request, exception)
