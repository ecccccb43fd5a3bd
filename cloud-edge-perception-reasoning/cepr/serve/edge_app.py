"""The edge service's HTTP API (FastAPI): ``create_app(service)`` for a started :class:`EdgeService`.

* ``POST /v1/perceive?source=upload&mask=rle|png|none``: a frame (JPEG/PNG bytes as the body, or multipart
  form-data with field ``frame``) -> the scene summary (JSON), the mask, the standing tasks' answers;
* ``POST /v1/ask`` ``{"task", "source"?, "frame_id"?, "wait_s"?}`` -> answer, confidence, ``source`` (edge|cloud),
  ``upgraded_at``, ``cloud_status``; ``GET /v1/answers/{id}?wait_s=`` and ``GET /v1/answers?source=&since=``;
* ``GET /v1/state`` (what the live page polls), ``GET /v1/frames/{source}/latest.jpg`` (mask overlay),
  ``GET /v1/frames/{source}/{frame_id}``; ``GET /health``; ``GET /metrics`` (Prometheus); ``GET /`` (live page).
"""

from __future__ import annotations

from email import message_from_bytes
from email.policy import HTTP
from typing import Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from cepr.data.tasks import TASK_NAMES
from cepr.errors import CeprError
from cepr.serve.edge_page import PAGE
from cepr.serve.edge_service import UPLOAD_SOURCE, EdgeService, EdgeServiceConfig


class AskBody(BaseModel):
    """``POST /v1/ask``: a closed-set task about a source's latest frame, or a given frame id."""

    model_config = ConfigDict(extra="forbid")
    task: str | None = None
    question: str | None = None
    source: str | None = None
    frame_id: int | None = None
    wait_s: float = Field(0.0, ge=0, le=30, description="wait this long (at most to the deadline) for the cloud")


def _multipart_image(body: bytes, content_type: str) -> bytes:
    """The first file part (or the part named ``frame``/``file``/``image``) of a multipart/form-data body."""
    msg = message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + body,
                             policy=HTTP)
    if not msg.is_multipart():
        raise CeprError("multipart body without parts (check the boundary)")
    parts = [p for p in msg.iter_parts()]
    named = [p for p in parts if p.get_param("name", header="content-disposition") in ("frame", "file", "image")]
    for p in named + parts:
        data = p.get_payload(decode=True)
        if data:
            return data
    raise CeprError("the multipart body has no non-empty part (send the frame as field 'frame')")


def create_app(service: EdgeService):
    """The FastAPI app of a (started) service: /v1/perceive, /v1/ask, /v1/answers, /v1/state, /health, /metrics,
    / (the live page)."""
    app = FastAPI(title="cepr edge service", version="1")
    max_body = int(service.config.max_body_mb * 1024 * 1024)

    @app.exception_handler(CeprError)
    async def _cepr_error(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.post("/v1/perceive")
    async def perceive(request: Request, source: str = Query(UPLOAD_SOURCE, pattern=r"^[A-Za-z0-9_.-]{1,40}$"),
                       mask: Literal["rle", "png", "none"] = "rle"):
        body = await request.body()
        if len(body) > max_body:
            raise HTTPException(413, f"body of {len(body)} bytes is over the {service.config.max_body_mb} MB limit")
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            try:
                body = _multipart_image(body, ctype)
            except CeprError as e:
                service.metrics.bad.labels(source).inc()
                raise HTTPException(400, f"bad multipart frame: {e}") from None
        try:
            rec = await run_in_threadpool(service.perceive_bytes, body, source)
        except CeprError as e:
            raise HTTPException(400, f"bad frame: {e}") from None
        out = rec.to_json(mask=mask)
        out["answers"] = [service.answer(aid) for aid in rec.answer_ids.values()]
        return out

    @app.post("/v1/ask")
    async def ask(body: AskBody):
        task = body.task
        if task is None:
            raise HTTPException(400, "give `task`, one of the closed-set tasks: " + ", ".join(TASK_NAMES)
                                + (" (free-text questions are not answered on the edge)" if body.question else ""))
        try:
            return await run_in_threadpool(service.ask, task, body.source, body.frame_id, body.wait_s)
        except LookupError as e:
            raise HTTPException(404, str(e.args[0])) from None

    @app.get("/v1/answers/{answer_id}")
    def get_answer(answer_id: str, wait_s: float = Query(0.0, ge=0, le=30)):
        try:
            return service.answer(answer_id, wait_s)
        except KeyError as e:
            raise HTTPException(404, str(e.args[0])) from None

    @app.get("/v1/answers")
    def list_answers(source: str | None = None, since: float = 0.0, limit: int = Query(1000, ge=1, le=100000)):
        return {"answers": service.answers(source, since, limit)}

    @app.get("/v1/state")
    def state(recent: int = Query(12, ge=0, le=200)):
        return {**service.stats(), "recent_answers": service.answers(limit=recent)[::-1]}

    @app.get("/v1/frames/{source}/latest.jpg")
    def latest_jpeg(source: str):
        try:
            return Response(service.overlay(source), media_type="image/jpeg",
                            headers={"Cache-Control": "no-store"})
        except LookupError as e:
            raise HTTPException(404, str(e.args[0])) from None

    @app.get("/v1/frames/{source}/{frame_id}")
    def frame_json(source: str, frame_id: int, mask: Literal["rle", "png", "none"] = "rle"):
        try:
            return service.frame(source, frame_id).to_json(mask=mask)
        except LookupError as e:
            raise HTTPException(404, str(e.args[0])) from None

    @app.get("/health")
    def health():
        s = service.stats()
        failing = [n for n, v in s["sources"].items() if v["error"] and v["kind"] != "upload"]
        return {"status": "degraded" if failing else "ok", "failing_sources": failing, **s}

    @app.get("/metrics")
    def metrics():
        service.refresh_gauges()
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE

    return app


def serve(config: EdgeServiceConfig, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning") -> None:
    """Start the service and uvicorn; stop both on Ctrl-C / SIGTERM."""
    import uvicorn  # optional heavy dependency (the serve extra)

    service = EdgeService(config).start()
    try:
        s = service.stats()
        print(f"cepr edge service on http://{host}:{port}/  (algorithm {service.deployment.algorithm}: "
              f"{service.deployment.policy} {service.deployment.policy_hps}; cloud {s['cloud']['mode']}; sources: "
              f"{', '.join(s['sources']) or 'none, POST /v1/perceive'})", flush=True)
        uvicorn.run(create_app(service), host=host, port=port, log_level=log_level)
    finally:
        service.stop()
