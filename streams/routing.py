"""WebSocket routes (filled in by the live-delivery work)."""

websocket_urlpatterns: list = []
