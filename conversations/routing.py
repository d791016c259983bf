"""Websocket routes; openspark.asgi wraps them in the origin check and session auth."""

from django.urls import path

from .consumers import ChatConsumer

websocket_urlpatterns = [path("ws/chat/", ChatConsumer.as_asgi())]
