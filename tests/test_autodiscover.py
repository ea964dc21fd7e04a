"""Autodiscovery imports every installed app's tasks.py and hides no import error."""

import pytest
from django.apps import apps
from django.test import override_settings

from djtasks.registry import autodiscover, registry


def test_tasks_of_installed_apps_are_registered_at_start_up():
    assert "tests.app.tasks.add" in registry
    assert "example_project.shop.tasks.send_welcome_email" in registry


def test_an_import_error_in_a_tasks_module_propagates():
    installed = [a.name for a in apps.get_app_configs()]
    # Adding the app runs ready() and so autodiscovery: the error must surface.
    with (
        pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist"),
        override_settings(INSTALLED_APPS=[*installed, "tests.broken_app"]),
    ):
        autodiscover()


def test_an_app_without_tasks_module_is_skipped():
    installed = [a.name for a in apps.get_app_configs()]
    with override_settings(INSTALLED_APPS=[*installed, "django.contrib.humanize"]):
        autodiscover()  # no error: humanize has no tasks.py
