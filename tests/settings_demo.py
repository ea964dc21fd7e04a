"""The example site's settings with the test tasks installed: ``scripts/demo.sh``
run by the tests, with a slow task of their own to interrupt."""

from example_project.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.app"]  # noqa: F405
