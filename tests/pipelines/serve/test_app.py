"""The search service on a real Ray Serve, over HTTP on 127.0.0.1: answers, refusals, thumbnails, the page in a
real headless Chromium, a new index version followed without a restart, an unreachable index answered 503."""
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser

import pytest

from pipelines.embed import EmbedOptions, embed_corpus
from pipelines.serve import APP_NAME, ServeOptions, ServiceOptions, start_service, stop_service
from pipelines.shards.stream import split_videos
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"



def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as reply:
            return reply.status, reply.read(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


def get_json(url: str) -> tuple[int, dict]:
    status, body, _ = get(url)
    return status, json.loads(body)


@pytest.fixture(scope="module")
def service(ray_cluster, trained_index, tmp_path_factory):

    index, _, uri = trained_index
    served = tmp_path_factory.mktemp("served") / "index"
    shutil.copytree(index, served)
    address = start_service(ServeOptions(index=str(served), tracking_uri=uri, refresh_s=0.5),
                            ServiceOptions(port=free_port(), replica_cpus=2))
    try:
        yield address, served, uri
    finally:
        stop_service()


@pytest.fixture(scope="module")
def first_test_video(synthetic_shards):
    return next(split_videos([str(synthetic_shards)], "test"))


def test_the_replica_reserves_the_cpus_it_was_given(service):
    import ray

    assert ray.cluster_resources()["CPU"] - ray.available_resources().get("CPU", 0) == 2   # its torch threads


def test_search_health_and_thumbnails(service, first_test_video):
    address, _, _ = service
    status, health = get_json(address + "healthz")
    assert status == 200 and health["videos"] == 16 and health["search"] == "exact"
    q = urllib.request.quote(first_test_video["captions"][0])
    status, answer = get_json(f"{address}search?q={q}&k=5")
    assert status == 200 and answer["hits"][0]["video_id"] == first_test_video["id"] and len(answer["hits"]) == 5
    assert answer["index_version"] == health["index_version"] and answer["model"] == health["model"]
    with urllib.request.urlopen(address + answer["hits"][0]["thumbnail"], timeout=60) as reply:
        jpeg, kind, caching = reply.read(), reply.headers["Content-Type"], reply.headers["Cache-Control"]
    assert kind == "image/jpeg" and jpeg[:2] == b"\xff\xd8" and "immutable" in caching   # its URL names a version
    assert get(address + "thumbnail/nope")[0] == 404
    status, page, kind = get(address)
    assert status == 200 and kind.startswith("text/html") and b'<form id="search"' in page


def test_concurrent_queries_are_gathered_into_batches_and_each_gets_its_own_answer(service, synthetic_shards):

    address, _, _ = service
    videos = list(split_videos([str(synthetic_shards)], "test"))
    asked = [(v["captions"][0], 1 + i % 3) for i, v in enumerate(videos * 4)]
    with ThreadPoolExecutor(len(asked)) as pool:
        answers = list(pool.map(lambda qk: get_json(f"{address}search?q={urllib.request.quote(qk[0])}&k={qk[1]}"),
                                asked))
    assert all(status == 200 for status, _ in answers)
    assert [(a["query"], len(a["hits"])) for _, a in answers] == asked
    assert max(a["batch"] for _, a in answers) > 1


@pytest.mark.parametrize("query, says", [("q=", "q is empty"), ("q=dog&k=0", "from 1 to 100"),
                                         ("q=dog&k=many", "whole number"), ("q=" + "x" * 400, "characters long")])
def test_bad_queries_are_400_with_a_message(service, query, says):
    status, answer = get_json(f"{service[0]}search?{query}")
    assert status == 400 and says in answer["error"]


class _Hits(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "li" and "hit" in (attrs.get("class") or ""):
            self.ids.append(attrs.get("data-video-id"))


def test_the_page_in_headless_chromium_shows_the_captioned_video_first(service, first_test_video, tmp_path):
    assert shutil.which(CHROMIUM), "Debian's chromium is needed (make env installs it)"
    url = f"{service[0]}?q={urllib.request.quote(first_test_video['captions'][0])}&k=4"
    shot = tmp_path / "page.png"
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    hits = _Hits()
    hits.feed(dom)
    assert hits.ids[:1] == [first_test_video["id"]] and len(hits.ids) == 4
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,800", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000


def test_a_published_version_is_served_without_a_restart(service, synthetic_shards, untrained_adapter):
    address, served, uri = service
    _, before = get_json(address + "healthz")
    embed_corpus(EmbedOptions(shards=str(synthetic_shards), model=str(untrained_adapter), out=str(served), workers=1,
                              batch_size=4, tracking_uri=uri))
    deadline, seen = time.monotonic() + 120, [before["index_version"]]
    while time.monotonic() < deadline:      # the run's intermediate versions still have the old live model
        status, answer = get_json(address + "search?q=a+red+square&k=3")
        assert status == 200 and answer["index_version"] >= seen[-1]
        seen.append(answer["index_version"])
        if answer["model"] != before["model"]:
            break
        time.sleep(0.2)
    assert answer["model"] != before["model"] and answer["index_version"] > before["index_version"]
    _, health = get_json(address + "healthz")
    assert health["model"] == answer["model"] and health["index_version"] >= answer["index_version"]


def test_an_unreachable_index_is_503_and_the_service_stays_up(service, tmp_path):
    from ray import serve

    from pipelines.serve.app import build

    serve.run(build({"index": str(tmp_path / "nothing"), "tracking_uri": service[2]}), name="missing",
              route_prefix="/missing", blocking=False)
    address = service[0]
    deadline = time.monotonic() + 120
    while serve.status().applications["missing"].status != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    status, answer = get_json(address + "missing/search?q=dog")
    assert status == 503 and "cannot be opened" in answer["error"]
    assert get_json(address + "missing/healthz")[0] == 503
    assert get_json(address + "healthz")[0] == 200 and APP_NAME in serve.status().applications
    serve.delete("missing")
