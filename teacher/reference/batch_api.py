"""OpenAI Batch API emulation for the reference teacher: /v1/files and /v1/batches.

Just enough of the protocol the openai SDK speaks (files.create purpose=batch, batches.create,
batches.retrieve, files.content) to test the replay's batch path offline. A batch completes
after cfg.batch_delay_s; each line is answered like an online request (no fault injection).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from teacher.reference.server import ReferenceTeacher


def add_batch_routes(app: web.Application, t: "ReferenceTeacher") -> None:
    def file_obj(fid: str, name: str, purpose: str) -> dict:
        return {"id": fid, "object": "file", "bytes": len(t.files[fid]), "created_at": int(time.time()),
                "filename": name, "purpose": purpose, "status": "processed"}

    async def create_file(request: web.Request) -> web.Response:
        data = await request.post()
        upload = data.get("file")
        if upload is None or not hasattr(upload, "file"):
            return web.json_response({"error": {"message": "missing 'file'", "type": "invalid_request_error"}}, status=400)
        fid = f"file-{uuid.uuid4().hex[:20]}"
        t.files[fid] = upload.file.read()
        return web.json_response(file_obj(fid, upload.filename or "upload.jsonl", str(data.get("purpose", "batch"))))

    async def file_content(request: web.Request) -> web.Response:
        fid = request.match_info["fid"]
        if fid not in t.files:
            return web.json_response({"error": {"message": f"no file {fid}", "type": "invalid_request_error"}}, status=404)
        return web.Response(body=t.files[fid], content_type="application/octet-stream")

    async def get_file(request: web.Request) -> web.Response:
        fid = request.match_info["fid"]
        if fid not in t.files:
            return web.json_response({"error": {"message": f"no file {fid}", "type": "invalid_request_error"}}, status=404)
        return web.json_response(file_obj(fid, f"{fid}.jsonl", "batch"))

    async def create_batch(request: web.Request) -> web.Response:
        body = await request.json()
        fid = body.get("input_file_id")
        if fid not in t.files:
            return web.json_response({"error": {"message": f"no input file {fid}", "type": "invalid_request_error"}}, status=404)
        bid = f"batch_{uuid.uuid4().hex[:20]}"
        t.batches[bid] = {
            "id": bid, "object": "batch", "endpoint": body.get("endpoint", "/v1/chat/completions"), "errors": None,
            "input_file_id": fid, "completion_window": body.get("completion_window", "24h"), "status": "in_progress",
            "output_file_id": None, "error_file_id": None, "created_at": int(time.time()), "in_progress_at": int(time.time()),
            "completed_at": None, "failed_at": None, "expired_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        asyncio.get_running_loop().create_task(_run_batch(t, bid))
        return web.json_response(t.batches[bid])

    async def get_batch(request: web.Request) -> web.Response:
        bid = request.match_info["bid"]
        if bid not in t.batches:
            return web.json_response({"error": {"message": f"no batch {bid}", "type": "invalid_request_error"}}, status=404)
        return web.json_response(t.batches[bid])

    app.router.add_post("/v1/files", create_file)
    app.router.add_get("/v1/files/{fid}", get_file)
    app.router.add_get("/v1/files/{fid}/content", file_content)
    app.router.add_post("/v1/batches", create_batch)
    app.router.add_get("/v1/batches/{bid}", get_batch)


async def _run_batch(t: "ReferenceTeacher", bid: str) -> None:
    await asyncio.sleep(t.cfg.batch_delay_s)
    batch = t.batches[bid]
    out, err = [], []
    for line in t.files[batch["input_file_id"]].decode().splitlines():
        if not line.strip():
            continue
        req = json.loads(line)
        status, payload, pid = t.completion_body(req.get("body") or {})
        row = {"id": f"batch_req_{uuid.uuid4().hex[:16]}", "custom_id": req.get("custom_id"),
               "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": payload}, "error": None}
        if status == 200:
            t.answered[pid] += 1
            out.append(row)
        else:
            err.append(row)
    counts = {"total": len(out) + len(err), "completed": len(out), "failed": len(err)}
    for rows, field in ((out, "output_file_id"), (err, "error_file_id")):
        if rows:
            fid = f"file-{uuid.uuid4().hex[:20]}"
            t.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
            batch[field] = fid
    batch.update(status="completed", completed_at=int(time.time()), request_counts=counts)
