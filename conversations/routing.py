"""Websocket routes (the chat consumer is added by the chat pipeline)."""

websocket_urlpatterns: list = []
