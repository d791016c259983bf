from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from conversations.pages import chat_page
from knowledge.pages import knowledge_page
from openspark.core import health
from openspark.core.metrics import metrics_view

api_v1 = [
    path("", include("accounts.api_urls")),
    path("", include("openspark.core.urls")),
    path("", include("conversations.urls")),
    path("knowledge/", include("knowledge.urls")),
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
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("accounts.urls")),
    path("knowledge/", knowledge_page, name="knowledge"),
    path("", chat_page, name="home"),
]
