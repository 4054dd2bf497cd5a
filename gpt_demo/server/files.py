"""``/v1/files``: upload (multipart, ``purpose=fine-tune``), list, retrieve, content and delete.

    curl -s http://127.0.0.1:8000/v1/files -H "Authorization: Bearer $ADMIN_KEY" \\
         -F purpose=fine-tune -F file=@secret.jsonl

A file is checked on upload (``gpt_demo.finetune.formats``): chat, prompt/completion or preference
(DPO) JSON Lines. A bad file is a 400 whose message lists ``FILE:LINE: problem`` for each fault.
The bytes are kept verbatim in ``$GPT_DEMO_HOME/files/ID.jsonl``; at most ``MAX_FILE_BYTES`` (413).
These routes need an admin key when admin keys are set (the ``admin`` dependency).
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import PurePath

from fastapi import Request  # module level: FastAPI resolves the string annotations against these globals

from .errors import APIError, bad_request

MAX_FILE_BYTES = 32 << 20  # 32 MiB: far more than a small model trains on in one job
_MULTIPART_SLACK = 64 << 10  # headers and boundaries around the file part
PURPOSES = ("fine-tune",)
FORM_FIELDS = ("file", "purpose", "expires_after[anchor]", "expires_after[seconds]")


def _ascii_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200] or "file.jsonl"


def not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", param="id", code="file_not_found")


def too_large(size: int | None = None) -> APIError:
    what = f"has {size:,} bytes" if size is not None else "is too large"
    return APIError(413, f"The file {what}; the limit is {MAX_FILE_BYTES:,} bytes.", param="file",
                    code="file_too_large")


def _query_int(request: Request, name: str, lo: int, hi: int, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or not lo <= int(raw) <= hi:
        raise bad_request(f"{name}={raw!r} is out of range; allowed: {lo} <= {name} <= {hi}", name)
    return int(raw)


async def _bounded_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request, body: bytes):
    from starlette.requests import Request as StarletteRequest

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_request("Uploads are multipart/form-data with the fields file and purpose.", "file")
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await StarletteRequest(request.scope, receive).form(max_files=1, max_fields=8)
    except Exception as exc:  # noqa: BLE001 - a malformed multipart body
        raise bad_request(f"The multipart body could not be parsed: {exc}", "file") from None


def _store_upload(store, data: bytes, filename: str, purpose: str) -> dict:
    from ..finetune.formats import check_file
    from ..finetune.store import new_id
    from ..training.data import DataError

    file_id = new_id("file")
    final = store.file_path(file_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_suffix(".upload")
    tmp.write_bytes(data)
    try:
        try:
            checked = check_file(tmp, filename)
        except DataError as exc:
            raise bad_request(f"Invalid file format for fine-tuning: {exc}", "file", "invalid_file_format") from None
        except UnicodeDecodeError as exc:
            raise bad_request(f"{filename}: the file is not UTF-8 text ({exc.reason} at byte {exc.start})", "file",
                              "invalid_file_format") from None
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return store.add_file(file_id, filename, len(data), purpose, checked.format, checked.examples)


def add_routes(router, state, *, admin) -> None:
    """Add the file routes to ``router``; ``admin`` is the dependency that checks for an admin key."""

    def store():
        return state.extra["finetune"].store

    @router.post("/files", dependencies=[admin])
    async def upload(request: Request):
        body = await _bounded_body(request, MAX_FILE_BYTES + _MULTIPART_SLACK)
        form = await _form(request, body)
        unknown = [k for k in form.keys() if k not in FORM_FIELDS]
        if unknown:
            raise APIError(400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
        purpose = form.get("purpose")
        if not purpose:
            raise bad_request("Missing required parameter: 'purpose'; give purpose=fine-tune", "purpose")
        if purpose not in PURPOSES:
            raise bad_request(f"purpose={purpose!r} is not supported; this server stores files for "
                              f"{', '.join(PURPOSES)} only", "purpose")
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise bad_request("Missing required parameter: 'file'; upload a JSONL file", "file")
        data = await upload.read()
        await form.close()
        if len(data) > MAX_FILE_BYTES:
            raise too_large(len(data))
        filename = PurePath(upload.filename or "file.jsonl").name or "file.jsonl"
        return await asyncio.to_thread(_store_upload, store(), data, filename, purpose)

    @router.get("/files", dependencies=[admin])
    async def list_files(request: Request):
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise bad_request(f"order={order!r} is not allowed; choose asc or desc", "order")
        limit = _query_int(request, "limit", 1, 10_000, 10_000)
        rows, more = await asyncio.to_thread(store().files, purpose=request.query_params.get("purpose"), order=order,
                                             after=request.query_params.get("after"), limit=limit)
        return {"object": "list", "data": rows, "has_more": more,
                "first_id": rows[0]["id"] if rows else None, "last_id": rows[-1]["id"] if rows else None}

    @router.get("/files/{file_id}", dependencies=[admin])
    async def get_file(file_id: str):
        row = await asyncio.to_thread(store().file, file_id)
        if row is None:
            raise not_found(file_id)
        return row

    @router.get("/files/{file_id}/content", dependencies=[admin])
    async def file_content(file_id: str):
        from fastapi.responses import Response

        s = store()
        row = await asyncio.to_thread(s.file, file_id)
        if row is None or not s.file_path(file_id).is_file():
            raise not_found(file_id)
        data = await asyncio.to_thread(s.file_path(file_id).read_bytes)
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{_ascii_name(row["filename"])}"'})

    @router.delete("/files/{file_id}", dependencies=[admin])
    async def delete_file(file_id: str):
        s = store()
        if await asyncio.to_thread(s.file, file_id) is None:
            raise not_found(file_id)
        busy = await asyncio.to_thread(s.jobs_using, file_id)
        if busy:
            raise bad_request(f"file_id={file_id!r} is used by fine-tuning job {busy[0]}, which has not ended; cancel "
                              "it or wait for it first", "file_id")
        await asyncio.to_thread(s.delete_file, file_id)
        return {"id": file_id, "object": "file", "deleted": True}
