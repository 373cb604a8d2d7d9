"""Per-app engine objects, built once by `create_app` and reached by views via `engine()`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from config import Settings
from workers.catalog import Catalog


@dataclass(frozen=True)
class Engine:
    settings: Settings
    catalog: Catalog


def engine() -> Engine:
    return current_app.extensions["lmhost"]
