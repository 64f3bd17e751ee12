"""50 concurrent project creations through HTTP: no duplicated port, no 5xx."""

from concurrent.futures import ThreadPoolExecutor

from codeb.store.models import PortAllocation


def create_many(api, n: int):
    def one(i: int):
        with api.client() as c:
            return c.post("/api/projects", json={"name": f"p{i}"})

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def assert_no_shared_port(api, responses, n):
    assert all(r.status_code == 201 for r in responses), [
        (r.status_code, r.text) for r in responses if r.status_code != 201
    ]
    ports = [
        port
        for r in responses
        for env in r.json()["environments"].values()
        for port in (env["app_port"], env["db_port"], env["redis_port"])
    ]
    assert len(ports) == len(set(ports)) == n * 6
    with api.deps.db.connection_context():
        assert PortAllocation.select().count() == n * 6
    staging_apps = sorted(r.json()["environments"]["staging"]["app_port"] for r in responses)
    assert staging_apps == list(range(3001, 3001 + n))  # dense: no port lost to a race


def test_fifty_concurrent_creations(api):
    responses = create_many(api, 50)
    assert_no_shared_port(api, responses, 50)


def test_same_name_concurrently_exactly_one_wins(api):
    def one(_):
        with api.client() as c:
            return c.post("/api/projects", json={"name": "same"}).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = sorted(pool.map(one, range(10)))
    assert codes == [201] + [409] * 9
