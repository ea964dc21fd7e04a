"""The browser fixtures themselves: a real Chromium reaches the admin."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_superuser_logs_into_the_admin_and_sees_task_results(admin_browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    admin_browser.get(f"{admin_browser.live_server_url}/admin/")
    links = [a.text for a in admin_browser.find_elements(By.CSS_SELECTOR, "#content-main a")]
    assert "Task results" in links
