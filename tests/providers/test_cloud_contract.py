"""Contract tests of the cloud provider: the real Vultr client over real HTTP against the
stateful fake of Vultr's published v2 contract (the cloud itself is unreachable from here).
Every request the client sends is checked against the documented shapes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from codeb.providers.cloud import (
    AUTOSCALED_TAG,
    CODEB_TAG,
    CloudAuthFailed,
    CloudRejected,
    CloudUnavailable,
    InstanceSpec,
    Vultr,
)
from tests.providers.vultr_fake import VultrFake, serve

KEY = "VULTR-TEST-KEY-0123456789"


@pytest.fixture
def fake() -> VultrFake:
    return VultrFake(api_key=KEY)


@pytest.fixture
def cloud(fake: VultrFake) -> Iterator[tuple[Vultr, list[float]]]:
    slept: list[float] = []
    with serve(fake) as url:
        client = Vultr(
            KEY, base_url=url, retries=4, backoff_s=0.01, page_size=10, sleep=slept.append
        )
        yield client, slept
        client.close()
    assert fake.violations == [], fake.violations


def spec(label: str = "codeb-app-1", **kw) -> InstanceSpec:
    return InstanceSpec(
        label=label,
        hostname=label,
        region="ams",
        plan="vc2-1c-2gb",
        os_id=2136,
        ssh_key_ids=("key-1",),
        user_data="#cloud-config\nssh_authorized_keys: ['ssh-ed25519 AAAA codeb']\n",
        tags=(CODEB_TAG, AUTOSCALED_TAG),
        **kw,
    )


def wait_ready(client: Vultr, instance_id: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inst = client.get_instance(instance_id)
        if inst is not None and inst.ready:
            return inst
        time.sleep(0.05)
    raise AssertionError("never ready")


def test_create_is_pending_without_an_address_then_ready(fake, cloud):
    client, _ = cloud
    seen = []
    fake.on_create = lambda request: seen.append(request) or "10.88.99.7"
    created = client.create_instance(spec())
    assert created.status == "pending" and created.main_ip == "0.0.0.0"
    assert not created.has_address and not created.ready
    assert set(created.tags) == {CODEB_TAG, AUTOSCALED_TAG}
    ready = wait_ready(client, created.id)
    assert ready.main_ip == "10.88.99.7" and ready.server_status == "ok"
    # user_data travels base64-encoded and arrives as written.
    assert seen[0]["user_data"] == spec().user_data
    assert seen[0]["sshkey_id"] == ["key-1"]


def test_create_is_idempotent_by_label_and_tags(fake, cloud):
    client, _ = cloud
    first = client.create_instance(spec())
    again = client.create_instance(spec())
    assert again.id == first.id
    assert len(fake.live()) == 1


def test_a_lost_create_answer_does_not_buy_a_second_server(fake, cloud):
    client, _ = cloud
    fake.lose_next_create_answer()
    created = client.create_instance(spec())
    assert [i["id"] for i in fake.live()] == [created.id]


def test_rate_limits_are_retried_with_backoff_and_retry_after(fake, cloud):
    client, slept = cloud
    fake.fail_next(429, times=3, retry_after=0)
    created = client.create_instance(spec())
    assert len(fake.live()) == 1 and created.id
    assert len(slept) == 3 and all(s == 0 for s in slept)
    fake.fail_next(503, times=2)
    assert client.get_instance(created.id).id == created.id
    assert len(slept) == 5 and all(0 < s <= 12 for s in slept[3:])


def test_a_storm_longer_than_the_retries_fails_cleanly_with_no_instance(fake, cloud):
    client, _ = cloud
    fake.fail_next(429, times=50, retry_after=0)
    with pytest.raises(CloudUnavailable, match="429"):
        client.create_instance(spec())
    fake._inject.clear()
    assert fake.live() == []


def test_lists_page_through_every_tagged_instance(fake, cloud):
    client, _ = cloud
    for n in range(23):
        client.create_instance(spec(f"codeb-app-{n}"))
    untagged = InstanceSpec("other", "other", "ams", "vc2-1c-2gb", 2136, tags=("someone-else",))
    client.create_instance(untagged)
    listed = client.list_instances(AUTOSCALED_TAG)
    assert len(listed) == 23 and len({i.id for i in listed}) == 23
    pages = [r for r in fake.requests if r == ("GET", "/v2/instances")]
    assert len(pages) >= 3


def test_delete_then_gone_and_a_second_delete_is_fine(fake, cloud):
    client, _ = cloud
    created = client.create_instance(spec())
    client.delete_instance(created.id)
    assert client.get_instance(created.id) is None
    client.delete_instance(created.id)
    assert client.list_instances(CODEB_TAG) == []


def test_a_wrong_key_is_refused_and_never_echoed(fake):
    with serve(fake) as url:
        client = Vultr("WRONG-KEY-abcdef", base_url=url, retries=0)
        with pytest.raises(CloudAuthFailed) as refused:
            client.list_instances(CODEB_TAG)
        assert "WRONG-KEY" not in str(refused.value) and "WRONG-KEY" not in repr(client)
        client.close()


def test_an_invalid_request_is_rejected_with_the_clouds_reason(fake, cloud):
    client, _ = cloud
    bad = InstanceSpec("x", "x", "", "vc2-1c-2gb", 2136, tags=(CODEB_TAG,))
    with pytest.raises(CloudRejected, match="region"):
        client.create_instance(bad)
    assert fake.live() == []
