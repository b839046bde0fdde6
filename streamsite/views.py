from django.http import JsonResponse
from django.views.defaults import bad_request, page_not_found, server_error


def not_found(request, exception=None):
    """JSON 404 under /api/ (clients parse it); Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"no such endpoint: {request.method} {request.path}"}, status=404)
    return page_not_found(request, exception)


def bad_request_json(request, exception=None):
    """JSON 400 under /api/ for what Django itself rejects before a view runs."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"bad request: {exception or 'malformed request'}"}, status=400)
    return bad_request(request, exception)


def server_error_json(request):
    """A 500 is a bug; an API client still gets JSON it can parse."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "internal server error (logged)"}, status=500)
    return server_error(request)
