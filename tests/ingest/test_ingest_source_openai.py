"""OpenAI stored completions, read with the openai SDK from a real local HTTP server."""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlparse

import pytest

from core.base import DistillError
from ingest.config import IngestConfig
from ingest.sources import iter_source
from ingest_testkit import assert_balanced

KEY = "sk-test-123"


def completion(i: int, created: int, model="gpt-4o", feature="router", user=None) -> dict:
    return {
        "id": f"chatcmpl-{i}", "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": f"answer {i}", "refusal": None}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        "metadata": {"feature": feature},
        "_input": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": user or f"stored question {i} about thing {i * 31}"}],
    }


class StoreServer:
    """Speaks GET /v1/chat/completions and /v1/chat/completions/{id}/messages like the API,
    including cursor pagination (after/limit/has_more), order and model/metadata filters."""

    def __init__(self, completions: list[dict], messages_page: int = 1):
        self.completions = completions
        self.messages_page = messages_page  # serve fewer than asked, to exercise pagination
        self.requests: list[str] = []
        store = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                store.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
                u = urlparse(self.path)
                q = dict(parse_qsl(u.query))
                parts = u.path.strip("/").split("/")
                if parts == ["v1", "chat", "completions"]:
                    return self._send(200, store.list_completions(q))
                if len(parts) == 5 and parts[:3] == ["v1", "chat", "completions"] and parts[4] == "messages":
                    page = store.list_messages(parts[3], q)
                    return self._send(404 if page is None else 200, page or {"error": {"message": "not found"}})
                self._send(404, {"error": {"message": "no route"}})

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @staticmethod
    def _page(items: list[dict], q: dict, limit: int) -> dict:
        if "after" in q:
            ids = [x["id"] for x in items]
            items = items[ids.index(q["after"]) + 1:]
        page = items[:limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}

    def list_completions(self, q: dict) -> dict:
        items = sorted(self.completions, key=lambda c: c["created"], reverse=q.get("order") == "desc")
        if "model" in q:
            items = [c for c in items if c["model"] == q["model"]]
        for k, v in q.items():
            if k.startswith("metadata[") and k.endswith("]"):
                items = [c for c in items if c["metadata"].get(k[9:-1]) == v]
        page = self._page(items, q, int(q.get("limit", 20)))
        page["data"] = [{k: v for k, v in c.items() if k != "_input"} for c in page["data"]]
        return page

    def list_messages(self, cid: str, q: dict) -> dict | None:
        c = next((c for c in self.completions if c["id"] == cid), None)
        if c is None or c.get("_gone"):
            return None
        msgs = [{"id": f"{cid}-{j}", "name": None, "content_parts": None, **m} for j, m in enumerate(c["_input"])]
        return self._page(msgs, q, min(int(q.get("limit", 20)), self.messages_page))

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def src_cfg(base_url, **kw) -> IngestConfig:
    return IngestConfig.model_validate({"source": {"kind": "openai_stored", "base_url": base_url, "api_key": KEY,
                                                   "max_retries": 0, "timeout_s": 5, **kw}, "parquet": False})


def test_lists_every_page_and_fetches_messages(runner):
    # One message per page on the server side: the 2-message inputs need 2 requests each.
    comps = [completion(i, 1790000000 + i) for i in range(7)] + [completion(99, 1790000100, model="gpt-4o-mini")]
    with StoreServer(comps) as srv:
        cfg = src_cfg(srv.base_url, model="gpt-4o", metadata={"feature": "router"}, page_size=3)
        c = runner.run(cfg)
    assert_balanced(c)
    assert c["read"] == 7 and c["kept"] == 7
    lists = [r for r in srv.requests if r.startswith("/v1/chat/completions?")]
    assert len(lists) == 3  # 3 + 3 + 1, following `after`
    assert all("model=gpt-4o" in r and "metadata%5Bfeature%5D=router" in r for r in lists)
    recs = {r["id"]: r for r in runner.out("train") + runner.out("holdout")}
    r3 = recs["chatcmpl-3"]
    assert r3["messages"] == [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "stored question 3 about thing 93"}]
    assert r3["response"] == "answer 3" and r3["model"] == "gpt-4o"
    assert r3["timestamp"] == "2026-09-21T14:13:23Z" and r3["metadata"] == {"feature": "router"}


def test_incremental_run_stops_at_the_watermark(runner, tmp_path):
    comps = [completion(i, 1790000000 + i) for i in range(5)]
    with StoreServer(comps) as srv:
        cfg = src_cfg(srv.base_url, page_size=2)
        cfg.window.incremental = True
        assert runner.run(cfg)["read"] == 5
        comps.append(completion(5, 1790000050))
        srv.requests.clear()
        c = runner.run(cfg)
    assert (c["read"], c["kept"]) == (1, 1)
    fetched = {r.split("/")[4] for r in srv.requests if "/messages" in r}
    assert fetched == {"chatcmpl-5"}  # old completions are not fetched again
    assert runner.rd.stage("ingest")["window"]["watermark_after"] == "2026-09-21T14:14:10Z"


def test_missing_messages_quarantine_one_record(runner):
    comps = [completion(i, 1790000000 + i) for i in range(3)]
    comps[1]["_gone"] = True
    with StoreServer(comps) as srv:
        c = runner.run(src_cfg(srv.base_url))
    assert_balanced(c)
    assert c["quarantined_by_reason"] == {"fetch_failed": 1}
    assert runner.out("quarantine")[0]["source"] == srv.base_url


def test_unreachable_server_names_the_url(runner):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(DistillError, match=f"cannot reach OpenAI stored completions at {url}"):
        runner.run(src_cfg(url))
    assert not (runner.rd.path / "ingest").exists()


def test_rejected_key_is_a_clear_error(runner):
    with StoreServer([completion(1, 1790000000)]) as srv:
        cfg = IngestConfig.model_validate({"source": {"kind": "openai_stored", "base_url": srv.base_url,
                                                      "api_key": "wrong", "max_retries": 0}})
        with pytest.raises(DistillError, match="rejected the API key \\(401\\)"):
            list(iter_source(cfg.source))
    assert "wrong" not in repr(cfg) and "wrong" not in json.dumps(cfg.model_dump(mode="json"))
