"""What changed for a user and their device since a cursor (``GET /api/sync?since=``): privacy settings, coach
grants, the strategies bundle (as a delta from the version the device holds) and the model update offered to it.

No cursor means "everything": a freshly installed app gets the full state and a cursor to continue from.
"""

from __future__ import annotations

from datetime import datetime

from upcoach.coaching.service import Coach
from upcoach.devices.registry import Device
from upcoach.devices.sync import Cursor
from upcoach.modelstore.devices import DeviceQuery, parse_capabilities, recommend
from upcoach.modelstore.registry import ModelRegistry
from upcoach.privacy.grants import Grants
from upcoach.privacy.settings import PrivacyService
from upcoach.storage.tables import utc_now

BUNDLE_PATH = "/api/coach/strategies/bundle"


class ChangeFeed:
    def __init__(
        self,
        privacy: PrivacyService | None,
        grants: Grants | None,
        coach: Coach | None,
        registry: ModelRegistry | None,
    ) -> None:
        self._privacy = privacy
        self._grants = grants
        self._coach = coach
        self._registry = registry

    async def since(self, user_id: str, device: Device | None, cursor: Cursor | None) -> dict[str, object]:
        now = utc_now()
        settings_json, settings_version = await self._settings(user_id, cursor)
        bundle_json, bundle_version = self._bundle(cursor)
        return {
            "cursor": Cursor(now, settings_version, bundle_version).encode(),
            "full": cursor is None,
            "settings": settings_json,
            "grants": await self._grants_since(user_id, cursor.at if cursor else None, now),
            "bundle": bundle_json,
            "modelUpdate": await self._model_update(device),
        }

    async def _settings(self, user_id: str, cursor: Cursor | None) -> tuple[dict[str, object] | None, int]:
        if self._privacy is None:
            return None, cursor.settings_version if cursor else 0
        current = await self._privacy.get(user_id)
        if cursor is not None and cursor.settings_version == current.version:
            return None, current.version
        body = {_camel(name): value for name, value in current.editable().items()}
        body["version"] = current.version
        return body, current.version

    def _bundle(self, cursor: Cursor | None) -> tuple[dict[str, object] | None, str | None]:
        current = self._coach.strategies.current if self._coach is not None else None
        if current is None:
            return None, cursor.bundle_version if cursor else None
        held = cursor.bundle_version if cursor else None
        if held == current.version:
            return None, held
        url = BUNDLE_PATH if held is None else f"{BUNDLE_PATH}?since={held}"
        return {"version": current.version, "since": held, "url": url}, current.version

    async def _grants_since(self, user_id: str, since: datetime | None, now: datetime) -> list[dict[str, object]]:
        if self._grants is None:
            return []
        changed = []
        for grant in await self._grants.given_by(user_id):
            moments = [grant.created_at, grant.revoked_at, grant.expires_at]
            if since is None or any(m is not None and since < m <= now for m in moments):
                changed.append(grant.to_json(now))
        return changed

    async def _model_update(self, device: Device | None) -> dict[str, object] | None:
        """The model this device should run, when it is not the version the device reported."""
        if device is None or self._registry is None:
            return None
        try:
            capabilities = frozenset(parse_capabilities(list(device.capabilities)))
        except ValueError:
            capabilities = frozenset()
        result = recommend(DeviceQuery(device.ram_mb, device.model, None, capabilities))
        if result.model_id is None or not result.on_device:
            return None
        ready = [v for v in await self._registry.list() if v.name == result.model_id and v.status == "ready"]
        ready.sort(key=lambda v: (v.active, v.created_at), reverse=True)
        if not ready or ready[0].id == device.model_version:
            return None
        installed = ready[0].id
        base = f"/api/ai/models/{installed}"
        return {"modelId": installed, "sha256": ready[0].sha256, "size": ready[0].size,
                "artifactUrl": f"{base}/artifact", "manifestUrl": f"{base}/manifest"}  # fmt: skip


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
