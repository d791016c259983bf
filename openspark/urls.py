from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from assistants.pages import assistants_page
from conversations.pages import chat_page
from knowledge.pages import knowledge_page
from openspark.core import health
from openspark.core.csp import csp_override
from openspark.core.metrics import metrics_view
from openspark.core.pages import notifications_page

api_v1 = [
    path("", include("accounts.api_urls")),
    path("", include("openspark.core.urls")),
    path("", include("conversations.urls")),
    path("knowledge/", include("knowledge.urls")),
    path("assistants/", include("assistants.urls")),
    path("", include("throttling.urls")),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI's script is served apart from its page (`?script`), so no inline script;
    # its page keeps a small inline <style> and its icons are data: images.
    path(
        "api/docs/",
        csp_override(style_src="'self' 'unsafe-inline'", img_src="'self' data:")(
            SpectacularSwaggerSplitView.as_view(url_name="schema")
        ),
        name="swagger-ui",
    ),
    path("", include("accounts.urls")),
    path("knowledge/", knowledge_page, name="knowledge"),
    path("assistants/", assistants_page, name="assistants"),
    path("notifications/", notifications_page, name="notifications"),
    path("", chat_page, name="home"),
]
