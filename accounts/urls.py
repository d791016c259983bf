from django.urls import include, path

from . import views

app_name = "accounts"

account_patterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
    path("", views.account, name="account"),
]

urlpatterns = [
    path("accounts/", include(account_patterns)),
]
