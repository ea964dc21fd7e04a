"""In a real Chromium: a crontab schedule made in the admin shows its next runs."""

from __future__ import annotations

import pytest

from djtasks.beat.models import PeriodicTask
from tests.browser.conftest import screenshot

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_crontab_schedule_created_in_the_admin_shows_its_next_runs(admin_browser):  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    b = admin_browser
    b.get(f"{b.live_server_url}/admin/djtasks/periodictask/add/")
    b.find_element(By.NAME, "name").send_keys("weekday-report")
    b.find_element(By.NAME, "task").send_keys("tests.app.tasks.record")
    Select(b.find_element(By.NAME, "kind")).select_by_value("crontab")
    for field, value in (("minute", "15"), ("hour", "9"), ("day_of_week", "mon-fri")):
        element = b.find_element(By.NAME, field)
        element.clear()
        element.send_keys(value)
    b.find_element(By.NAME, "timezone").send_keys("America/New_York")
    args = b.find_element(By.NAME, "args")
    args.clear()
    args.send_keys('["weekday"]')
    b.find_element(By.NAME, "_continue").click()

    runs = [li.text for li in b.find_elements(By.CSS_SELECTOR, "ol.djtasks-next-runs li")]
    b.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                     b.find_element(By.CSS_SELECTOR, "ol.djtasks-next-runs"))
    screenshot(b, "periodic-task-next-runs")
    assert len(runs) == 5, b.page_source[:3000]
    assert all(" 09:15:00 E" in run for run in runs)  # EST or EDT: New York's own time
    assert all(not run.startswith(("Sat", "Sun")) for run in runs)
    assert PeriodicTask.objects.get(name="weekday-report").day_of_week == "mon-fri"

    b.get(f"{b.live_server_url}/admin/djtasks/periodictask/")
    listed = b.find_element(By.ID, "result_list").text
    assert "weekday-report" in listed and "djtasks.cleanup_results" in listed
    screenshot(b, "periodic-tasks")
