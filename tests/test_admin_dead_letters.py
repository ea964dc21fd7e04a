"""Dead letters in the admin, on the Redis and the database broker: list,
inspect the raw message and the reason, requeue, discard."""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from djtasks import AsyncResult
from djtasks.message import Message

pytestmark = pytest.mark.django_db(transaction=True)

LIST = "admin:djtasks_deadletter_changelist"


@pytest.fixture(params=["redis", "db"])
def letter_broker(request, settings, key_prefix):
    from djtasks.brokers import get_broker

    if request.param == "redis":
        request.getfixturevalue("redis_client")
    else:
        settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "db://default"}
    return get_broker()


@pytest.fixture
def root(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def _dead_letter(broker, task_id, body=None, reason="refused for the admin test"):
    msg = Message(id=task_id, task="tests.app.tasks.add", args=[2, 3], kwargs={},
                  queue="default")
    broker.publish([(msg, body if body is not None else msg.encode())])
    consumer = broker.consumer("probe.1/0.1", ["default"])
    consumer.renew(30)
    [delivery] = consumer.fetch(1, 0)
    consumer.dead_letter(delivery, reason)
    [letter] = [d for d in broker.dead_letters() if d.id == task_id or task_id in d.id]
    return letter


def test_the_list_links_each_letter_to_its_page(root, letter_broker):
    letter = _dead_letter(letter_broker, "dl-list")
    page = root.get(reverse(LIST)).content.decode()
    url = reverse("admin:djtasks_deadletter_letter", args=[letter.id])
    assert f'<a href="{url}">{letter.id}</a>' in page and "refused for the admin test" in page


def test_a_letters_page_shows_the_whole_message_and_the_reason(root, letter_broker):
    letter = _dead_letter(letter_broker, "dl-page")
    page = root.get(reverse("admin:djtasks_deadletter_letter", args=[letter.id])
                    ).content.decode()
    assert '<td id="reason">refused for the admin test</td>' in page
    assert '&quot;task&quot;: &quot;tests.app.tasks.add&quot;' in page  # the envelope, indented
    assert letter.body.decode().rpartition(":")[2] in page  # the raw bytes, signature too


def test_a_letter_that_is_not_json_is_shown_as_it_came(root, letter_broker):
    letter = _dead_letter(letter_broker, "dl-junk", body=b"\x00junk from elsewhere")
    page = root.get(reverse("admin:djtasks_deadletter_letter", args=[letter.id])
                    ).content.decode()
    assert page.count("junk from elsewhere") == 2


def test_a_letter_that_is_gone_is_a_404(root, letter_broker):
    url = reverse("admin:djtasks_deadletter_letter", args=["nothing-here"])
    assert root.get(url).status_code == 404


def test_requeue_from_a_letters_page_runs_the_task(root, letter_broker):
    from tests.conftest import run_burst

    letter = _dead_letter(letter_broker, "dl-requeue")
    root.post(reverse(LIST), {"action": "requeue", "ids": [letter.id]})
    assert letter_broker.dead_letters() == []
    run_burst()
    assert AsyncResult("dl-requeue").get(timeout=5) == 5


def test_discard_forgets_the_letter(root, letter_broker):
    letter = _dead_letter(letter_broker, "dl-discard")
    root.post(reverse(LIST), {"action": "discard", "ids": [letter.id]})
    assert letter_broker.dead_letters() == []


def test_a_view_only_user_sees_letters_and_cannot_requeue(client, letter_broker):
    from django.contrib.auth.models import Permission

    letter = _dead_letter(letter_broker, "dl-view")
    user = User.objects.create_user("v", "v@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_deadletter"))
    client.force_login(user)
    page = client.get(reverse("admin:djtasks_deadletter_letter", args=[letter.id])
                      ).content.decode()
    assert "refused for the admin test" in page and 'value="requeue"' not in page
    assert client.post(reverse(LIST), {"action": "requeue", "ids": [letter.id]}
                       ).status_code == 403
    assert [d.id for d in letter_broker.dead_letters()] == [letter.id]
