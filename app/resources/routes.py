from __future__ import annotations

from app.api import Blueprint
from app.extensions import engine
from app.resources.schemas import ResourcesSchema

blp = Blueprint("resources", __name__, url_prefix="/api/v1/resources",
                description="Memory: per GPU (or RAM), per instance, and what a load may take")


@blp.route("")
@blp.response(200, ResourcesSchema)
@blp.errors("unavailable")
def resources():
    """Memory now, as admission sees it: totals and free memory, reserved bytes, the limit,
    the guardrail, and each instance's estimate next to its measured use."""
    return engine().supervisor.resources()
