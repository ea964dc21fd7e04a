import pytest

from djtasks import states
from djtasks.models import TaskResult
from tests.app.tasks import add


@pytest.mark.django_db(transaction=True)
def test_delay_then_burst_worker_stores_success(burst):
    result = add.delay(2, 3)
    assert result.status == states.PENDING
    burst()
    assert result.status == states.SUCCESS
    assert result.get(timeout=1) == 5
    assert TaskResult.objects.get(task_id=result.id).worker
