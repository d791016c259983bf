from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        from . import receivers, schema  # noqa: F401 - schema registers the API-key scheme

        receivers.connect()
