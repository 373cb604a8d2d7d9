"""Stored chats of ``POST /api/v1/chat`` (``store``, ``previous_response_id``).

Each response that is stored is one small JSON file, ``<state>/responses/<response_id>.json``,
holding the chat's messages up to and including that answer, written atomically (temporary
file, then rename) so that every HTTP worker sees it whole. A continuation reads the file and
adds its turn; branching from an older response works the same way. The newest
`MAX_STORED` are kept: storing one more removes the oldest (by modification time).
"""

from __future__ import annotations

import json
import os
import re
import secrets

from workers.errors import InvalidRequest
from workers.statedir import StateDir

MAX_STORED = 1000
PRUNE_EVERY = 50          # look for old responses once every this many stores (per process)
_ID = re.compile(r"^resp_[0-9a-f]{48}$")


class ResponseStore:
    def __init__(self, state_dir: os.PathLike | str, max_stored: int = MAX_STORED):
        self.folder = StateDir(state_dir).responses
        self.max_stored = max_stored
        self._stores = 0

    def get(self, response_id: str) -> list[dict]:
        """The messages of a stored chat; an unknown id is a 400 naming the field."""
        path = self.folder / f"{response_id}.json" if _ID.match(response_id or "") else None
        try:
            if path is None:
                raise FileNotFoundError(response_id)
            return json.loads(path.read_text())["messages"]
        except (OSError, ValueError, KeyError):
            raise InvalidRequest(f"previous_response_id: no stored response {response_id!r} "
                                 f"(lmhost keeps the {self.max_stored} most recent)",
                                 param="previous_response_id") from None

    def put(self, messages: list[dict]) -> str:
        response_id = "resp_" + secrets.token_hex(24)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = self.folder / f".{response_id}.partial"
        partial.write_text(json.dumps({"messages": messages}))
        os.replace(partial, self.folder / f"{response_id}.json")
        self._stores += 1
        if self._stores % PRUNE_EVERY == 1:
            self.prune()
        return response_id

    def prune(self) -> None:
        stored = []
        for path in self.folder.glob("resp_*.json"):
            try:
                stored.append((path.stat().st_mtime, path))
            except OSError:
                continue
        stored.sort()
        for _, path in stored[:max(0, len(stored) - self.max_stored)]:
            try:
                path.unlink()
            except OSError:
                pass
