from django.urls import include, path

from . import views

app_name = "accounts"

account_patterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
    path("verify/sent/", views.verification_sent, name="verify-sent"),
    path("verify/resend/", views.verification_resend, name="verify-resend"),
    path("verify/<str:token>/", views.verify, name="verify"),
    path("", views.account, name="account"),
]

urlpatterns = [
    path("accounts/", include(account_patterns)),
]
