"""The workflow page in a real Chromium: from a task's page to its chord's tree."""

from __future__ import annotations

import pytest

from djtasks import chord
from djtasks.models import TaskResult
from tests.app import canvas_tasks as ct
from tests.test_canvas import drain

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_task_page_leads_to_its_chords_tree_and_progress(admin_browser, burst) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    result = chord(ct.double.s(i) for i in range(12))(ct.tsum.s())
    drain(burst)
    member = TaskResult.objects.get(task_id=result.parent.results[0].id)
    admin_browser.get(f"{admin_browser.live_server_url}/admin/djtasks/taskresult/{member.pk}/change/")
    admin_browser.find_element(By.PARTIAL_LINK_TEXT, "the workflow from root task").click()
    tree = admin_browser.find_element(By.ID, "workflow-tree")
    assert "12 of 12 done" in tree.find_element(By.CLASS_NAME, "workflow-progress").text
    bar = tree.find_element(By.TAG_NAME, "progress")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("12", "12")
    names = [a.text for a in tree.find_elements(By.CSS_SELECTOR, "tr.workflow-task a")]
    assert names.count("tests.app.canvas_tasks.double") == 12
    assert names[-1] == "tests.app.canvas_tasks.tsum"  # the callback, under its header
