from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from example_project.shop import views

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("reports/", views.reports, name="reports"),
    path("reports/<int:pk>/download/", views.download, name="report-download"),
    path("admin/", admin.site.urls),
]
