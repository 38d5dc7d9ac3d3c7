"""``POST /api/annotate`` of ``seedrl report --serve``: a request appends one record to the dataset's
``annotations.jsonl`` (through :mod:`seedrl.data.annotations`) and never touches a segment; bad input is a 400
naming the field and value, and a write from anywhere but the served page a 403; in both cases nothing is written.
The served and the file page carry the current annotations."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
from urllib.parse import urlsplit

import pytest

from seedrl.cli import main
from seedrl.data.annotations import ANNOTATIONS_FILE, Annotations, EpisodeAnnotations
from seedrl.data.segment import SEGMENTS
from seedrl.report.html.annotate import write_refusal
from tests.report.episode_sets import game_dataset
from tests.report.serving import get_json, post_json, served


def segment_hashes(path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((path / SEGMENTS).iterdir())}


@pytest.fixture
def data(tmp_path):
    return game_dataset(tmp_path / "game")  # episodes g0, g1, g2 of 4, 5, 6 steps


def test_posts_append_records_and_reply_the_current_annotations(data):
    before = segment_hashes(data)
    with served(["--data", str(data)]) as url:
        api = url + "api/annotate?source=0"
        status, reply = post_json(api, {"episode_id": "g1", "kind": "label", "value": "good", "author": "ann"})
        assert status == 200, reply
        assert reply["record"]["author"] == "ann" and reply["record"]["op"] == "add"
        assert reply["annotations"] == {"labels": ["good"], "rating": None, "notes": [], "tags": {}}
        for body in ({"episode_id": "g1", "kind": "label", "value": "slow"},
                     {"episode_id": "g1", "kind": "rating", "value": 4, "op": "set"},
                     {"episode_id": "g1", "kind": "note", "value": "recovers <b>well</b>"},  # text, kept as is
                     {"episode_id": "g1", "kind": "tag", "value": "mistake here", "step": 3},
                     {"episode_id": "g1", "kind": "label", "value": "slow", "op": "remove"},
                     {"episode_id": "g2", "kind": "rating", "value": 2},
                     {"episode_id": "g2", "kind": "rating", "op": "remove"}):  # no value needed to clear a rating
            status, reply = post_json(api, body)
            assert status == 200, reply
        want = EpisodeAnnotations(["good"], 4.0, ["recovers <b>well</b>"], {3: ["mistake here"]})
        assert EpisodeAnnotations.from_json(reply["annotations"]) == EpisodeAnnotations()  # g2's, cleared
        assert Annotations(data).all() == {"g1": want}
        assert len(Annotations(data).records()) == 8
        assert get_json(url + "api/annotations?source=0") == (200, {"annotations": {"g1": want.to_json()}})
        assert get_json(url + "api/episodes?source=0")[1]["annotations"] == {"g1": want.to_json()}
        Annotations(data).label("g0", "by-hand")  # another writer (the CLI, Python): the next poll has it
        assert sorted(get_json(url + "api/episodes?source=0&since=3")[1]["annotations"]) == ["g0", "g1"]
    assert segment_hashes(data) == before


BAD = [
    (b"not json", "body: b'not json' is not JSON"),
    (b"[1, 2]", "body: [1, 2] is not a JSON object"),
    ({"kind": "label", "value": "x"}, "episode_id: missing"),
    ({"episode_id": "g0", "kind": "label"}, "value: missing"),
    ({"episode_id": "g0", "kind": "label", "value": "x", "colour": "red"}, "field 'colour': not one of"),
    ({"episode_id": "g0", "kind": "label", "value": "x", "op": "toggle"}, "op 'toggle': not one of"),
    ({"episode_id": "g0", "kind": "label", "value": "x", "author": 5}, "author 5: must be a string"),
    ({"episode_id": "g9", "kind": "label", "value": "x"}, "episode_id 'g9': no such episode"),
    ({"episode_id": "g0", "kind": "colour", "value": "x"}, "kind 'colour': not one of"),
    ({"episode_id": "g0", "kind": "label", "value": "  "}, "label '  ': must be a non-empty string"),
    ({"episode_id": "g0", "kind": "rating", "value": "high"}, "rating 'high': must be a finite number"),
    ({"episode_id": "g0", "kind": "rating", "value": True}, "rating True: must be a finite number"),
    ({"episode_id": "g0", "kind": "tag", "value": "x", "step": 4}, "step 4: episode 'g0' has steps 0..3"),
    ({"episode_id": "g0", "kind": "tag", "value": "x"}, "step None: episode 'g0' has steps 0..3"),
    ({"episode_id": "g0", "kind": "tag", "value": "x", "step": "2"}, "step '2': episode 'g0' has steps 0..3"),
    ({"episode_id": "g0", "kind": "note", "value": "x", "step": 2}, "step 2: only a tag is per step"),
]


def test_bad_requests_are_400_naming_the_field_and_value_and_write_nothing(data):
    before = segment_hashes(data)
    with served(["--data", str(data)]) as url:
        for body, message in BAD:
            status, reply = post_json(url + "api/annotate?source=0", body)
            assert status == 400 and message in reply["error"], (body, reply)
        status, reply = post_json(url + "api/annotate?source=3", {"episode_id": "g0", "kind": "label", "value": "x"})
        assert status == 404 and reply["error"] == "source: 3 is not one of the 1 browsed datasets"
        status, reply = post_json(url + "api/annotate?source=x", {"episode_id": "g0", "kind": "label", "value": "x"})
        assert (status, reply["error"]) == (400, "source: 'x' is not a whole number")
    assert not (data / ANNOTATIONS_FILE).exists()
    assert segment_hashes(data) == before


def _raw(url: str, method: str, body: bytes, headers: dict) -> tuple[int, bytes]:
    """A request with exactly these headers (http.client adds Host only when not given)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.putrequest(method, u.path + ("?" + u.query if u.query else ""), skip_host="Host" in headers,
                        skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_writes_come_only_from_the_served_page(data):
    good = {"episode_id": "g0", "kind": "label", "value": "x"}
    with served(["--data", str(data)]) as url:
        api = url + "api/annotate?source=0"
        host = urlsplit(url).netloc
        refused = [
            ({"Origin": "http://evil.example"}, "Origin: 'http://evil.example' is not the served page"),
            ({"Origin": "null"}, "Origin: 'null' is not the served page"),
            ({"Host": "evil.example:80"}, "Host: 'evil.example:80' is not one of"),  # a rebound DNS name
            ({"Content-Type": "text/plain"}, "Content-Type: 'text/plain' is not 'application/json'"),
            ({"Content-Type": "application/x-www-form-urlencoded"}, "Content-Type: 'application/x-www-form-urlencoded'"),
        ]
        for headers, message in refused:
            status, reply = post_json(api, good, headers)
            assert status == 403 and message in reply["error"], (headers, reply)
        status, body = _raw(api, "POST", b"", {"Host": host, "Content-Type": "application/json"})
        assert status == 411 and b"Content-Length: missing" in body
        big = json.dumps({**good, "value": "x" * 70_000}).encode()
        assert post_json(api, big)[0] == 413
        assert post_json(url + "api/metrics", good)[0] == 404
        # a cross-site fetch with a JSON body first asks OPTIONS (CORS pre-flight): not answered with a grant
        status, body = _raw(api, "OPTIONS", b"", {"Host": host, "Origin": "http://evil.example",
                                                   "Access-Control-Request-Method": "POST"})
        assert status == 501 and b"Access-Control-Allow-Origin" not in body
        assert not (data / ANNOTATIONS_FILE).exists()
        # what the served page's own fetch sends: its origin, the JSON type
        assert post_json(api, good, {"Origin": f"http://{host}"})[0] == 200
        assert post_json(api, {**good, "value": "y"}, {"Host": host.replace("127.0.0.1", "localhost")})[0] == 200
    assert Annotations(data).episode("g0").labels == ["x", "y"]


def test_write_refusal_wants_a_loopback_client():
    ok = {"Host": "127.0.0.1:8765", "Content-Type": "application/json; charset=utf-8"}
    assert write_refusal("127.0.0.1", 8765, ok) is None
    assert "client: '10.1.2.3' is not this machine" in write_refusal("10.1.2.3", 8765, ok)
    assert "Host: '127.0.0.1:8765' is not one of" in write_refusal("127.0.0.1", 9000, ok)


def _section_data(page: str, sid: str) -> dict:
    return json.loads(re.search(rf'<script type="application/json" id="data-{sid}">(.*?)</script>', page).group(1))


def test_pages_carry_the_current_annotations(data, tmp_path):
    notes = Annotations(data)
    notes.label("g2", "good")
    notes.tag("g2", 5, "mistake here")
    out = tmp_path / "page.html"
    assert main(["report", "--data", str(data), "--out", str(out)]) == 0
    section = _section_data(out.read_text(), "episodes-0")
    assert section["live"] is False
    assert section["annotations"] == {"g2": {"labels": ["good"], "rating": None, "notes": [], "tags": {"5": ["mistake here"]}}}
    with served(["--data", str(data)]) as url:
        import urllib.request

        with urllib.request.urlopen(url, timeout=30) as r:
            served_section = _section_data(r.read().decode(), "episodes-0")
    assert served_section["live"] is True and served_section["annotations"] == section["annotations"]
