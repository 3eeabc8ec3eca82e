"""The session requests of the socket protocol, registered in the dispatch
table. A session send is a `complete` with `request.session` (see
`completions.py`); everything else is here."""

from __future__ import annotations

from typing import Any

from claif_client.protocol import (
    Result,
    SessionCreate,
    SessionDelete,
    SessionExport,
    SessionFork,
    SessionGet,
    SessionImport,
    SessionList,
    SessionRecover,
)

from ..dispatch import Conn, Dispatch, Start
from ..errors import BadRequest
from .service import SessionService, export_markdown

__all__ = ["register"]


def register(dispatch: Dispatch, sessions: SessionService) -> None:
    async def get(msg: SessionGet, conn: Conn, _: None) -> Result:
        return Result(id=msg.id, value=await sessions.get(msg.session_id))

    def get_inline(msg: SessionGet, conn: Conn) -> Result | Start:
        """A session in memory is answered at once; one on disk is loaded by a task."""
        session = sessions.in_memory(msg.session_id)
        if session is not None:
            return Result(id=msg.id, value=session)
        return Start(msg, get)

    async def create(msg: SessionCreate, conn: Conn, _: None) -> Result:
        return Result(id=msg.id, value=await sessions.create(msg.title, msg.model, msg.system, msg.metadata))

    async def list_(msg: SessionList, conn: Conn, _: None) -> Result:
        total, rows = await sessions.list(msg.metadata, msg.offset, msg.limit)
        return Result(id=msg.id, value={"total": total, "sessions": rows})

    async def delete(msg: SessionDelete, conn: Conn, _: None) -> Result:
        await sessions.delete(msg.session_id)
        return Result(id=msg.id, value={"deleted": msg.session_id})

    async def export(msg: SessionExport, conn: Conn, _: None) -> Result:
        session = await sessions.get(msg.session_id)
        value: Any
        if msg.format == "md":
            value = export_markdown(session)
        elif msg.format == "json":
            value = session
        else:
            raise BadRequest(f"unknown export format {msg.format!r} (md or json)")
        return Result(id=msg.id, value=value)

    async def import_(msg: SessionImport, conn: Conn, _: None) -> Result:
        return Result(id=msg.id, value=await sessions.import_document(msg.document))

    async def fork(msg: SessionFork, conn: Conn, _: None) -> Result:
        return Result(id=msg.id, value=await sessions.fork(msg.session_id, msg.at, msg.title))

    dispatch.inline(SessionGet, get_inline)
    dispatch.task(SessionCreate, create)
    dispatch.task(SessionList, list_)
    dispatch.task(SessionDelete, delete)
    dispatch.task(SessionExport, export)
    dispatch.task(SessionImport, import_)
    dispatch.task(SessionFork, fork)

    async def recover(msg: SessionRecover, conn: Conn, _: None) -> Result:
        return Result(id=msg.id, value={"acknowledged": await sessions.backend.acknowledge()})

    dispatch.task(SessionRecover, recover)
