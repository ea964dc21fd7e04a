"""The admin in a real headless Chromium: filter failures, run one again and
follow the link between the two rows; revoke a scheduled task; the dashboard
shows a live worker and a queue depth that changes. The screenshots these
take are the ones docs/admin.md shows (docs/img/)."""

from __future__ import annotations

import pytest

from djtasks import states
from djtasks.models import TaskResult
from tests.app import tasks
from tests.browser.conftest import screenshot
from tests.conftest import run_burst

pytestmark = pytest.mark.django_db(transaction=True)


def _wait(driver, predicate, timeout=20):  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The dashboard replaces its live part while the test reads it: an
    # element found just before is then stale, and is looked up again.
    return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(lambda d: predicate(d))


def _act_on(driver, pks, action):  # type: ignore[no-untyped-def]
    """Tick rows ``pks`` in the change list, run ``action``, land on its confirmation."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    for pk in pks:
        driver.find_element(By.CSS_SELECTOR, f"input.action-select[value='{pk}']").click()
    Select(driver.find_element(By.NAME, "action")).select_by_value(action)
    driver.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    driver.find_element(By.ID, "action-plan")


def test_filter_failures_open_one_run_it_again_and_follow_the_links(admin_browser, broker):  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver, base = admin_browser, admin_browser.live_server_url
    for i in range(3):
        tasks.add.delay(i, i)
    tasks.echo.apply_async(["report", 2026], {"month": "06"}, queue="default")
    failed = tasks.fail.delay("the payment service said no")
    run_burst()
    original = TaskResult.objects.get(task_id=failed.id)

    driver.get(f"{base}/admin/djtasks/taskresult/")
    driver.find_element(By.LINK_TEXT, "Failure").click()
    _wait(driver, lambda d: "status__exact=FAILURE" in d.current_url)
    rows = driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert [r.find_element(By.CSS_SELECTOR, ".field-short_id").text for r in rows] == [
        failed.id[:8]]
    screenshot(driver, "changelist-failures")

    driver.find_element(By.LINK_TEXT, failed.id[:8]).click()
    assert "the payment service said no" in driver.find_element(By.ID, "content-main").text
    driver.back()

    _act_on(driver, [original.pk], "rerun_selected")
    plan = driver.find_element(By.ID, "action-plan").text
    assert "a new task tests.app.tasks.fail('the payment service said no')" in plan
    screenshot(driver, "rerun-confirmation")
    driver.find_element(By.ID, "confirm-action").click()
    assert "Enqueued 1 new task(s)" in driver.find_element(By.CSS_SELECTOR, ".messagelist").text

    rerun = TaskResult.objects.get(parent_id=failed.id)
    driver.get(f"{base}/admin/djtasks/taskresult/{rerun.pk}/change/")
    driver.find_element(By.CSS_SELECTOR, ".field-parent_link a").click()
    _wait(driver, lambda d: f"/{original.pk}/change/" in d.current_url)
    children = driver.find_element(By.CSS_SELECTOR, ".field-children_links").text
    assert rerun.task_id in children
    driver.execute_script(
        "document.querySelector('.field-children_links').scrollIntoView({block: 'center'})")
    screenshot(driver, "rerun-linked")


def test_revoke_a_scheduled_task(admin_browser, broker):  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver, base = admin_browser, admin_browser.live_server_url
    scheduled = tasks.add.apply_async((40, 2), countdown=3600)
    done = tasks.add.delay(1, 1)
    run_burst()
    rows = {r.task_id: r.pk for r in TaskResult.objects.all()}

    driver.get(f"{base}/admin/djtasks/taskresult/")
    _act_on(driver, [rows[scheduled.id], rows[done.id]], "revoke_selected")
    plan = driver.find_element(By.ID, "action-plan").text
    assert "Revoke: 1 of 2 selected task(s)" in driver.find_element(By.ID, "content-main").text
    assert "skipped: it has finished (SUCCESS)" in plan
    screenshot(driver, "revoke-confirmation")
    driver.find_element(By.ID, "confirm-action").click()
    assert "Revoked 1 task(s)" in driver.find_element(By.CSS_SELECTOR, ".messagelist").text
    cell = driver.find_element(
        By.XPATH, f"//code[@title='{scheduled.id}']/ancestor::tr/td[@class='field-status_badge']")
    assert cell.text == states.REVOKED
    assert TaskResult.objects.get(task_id=scheduled.id).status == states.REVOKED


def test_the_dashboard_shows_a_live_worker_and_a_queue_depth_that_changes(
        admin_browser, broker, worker_process):  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver, base = admin_browser, admin_browser.live_server_url
    for i in range(6):
        tasks.add.delay(i, i)
    tasks.fail.delay("no stock left")
    run_burst()
    worker = worker_process("--pool", "prefork", "-c", "2", "-Q", "default",
                            "--hostname", "dashboard-worker")

    driver.get(f"{base}/admin/djtasks/dashboard/")
    # A worker subprocess takes a while to start on a loaded machine.
    _wait(driver, lambda d: "dashboard-worker" in d.find_element(By.ID, "dashboard-live").text,
          timeout=60)
    worker_row = _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#workers tr.worker").text)
    assert "prefork" in worker_row and "default" in worker_row

    def ready(queue: str) -> str:
        return driver.find_element(
            By.CSS_SELECTOR, f"#queues tr[data-queue='{queue}'] td.ready").text

    assert _wait(driver, lambda d: ready("other")) == "0"
    for _ in range(3):  # no worker consumes "other": they wait there
        tasks.on_other_queue.delay("x")
    _wait(driver, lambda d: ready("other") == "3")  # at the next refresh, without a reload
    assert "tests.app.tasks.fail" in _wait(driver, lambda d: d.find_element(By.ID, "failures").text)
    screenshot(driver, "dashboard")
    worker.stop()
