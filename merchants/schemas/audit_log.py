"""Response shape of audit log entries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from coalition.platform.api import Response


class AuditEntryRead(Response):
    id: uuid.UUID
    at: datetime
    org_id: uuid.UUID
    actor_kind: str
    actor_id: uuid.UUID | None
    actor_org_id: uuid.UUID | None
    action: str
    subject_type: str
    subject_id: uuid.UUID
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
