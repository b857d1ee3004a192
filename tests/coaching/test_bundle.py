"""The signed offline bundle: signature, deltas between content versions, unknown versions, the signing key."""

from __future__ import annotations

import base64
import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from upcoach.coaching.bundle import (
    KEY_FILE,
    BundleBuilder,
    SigningKeyError,
    load_or_create_signing_key,
    parse_signing_key,
    verify,
)
from upcoach.coaching.library import load_builtin
from upcoach.coaching.strategies import StrategyRepository
from upcoach.storage.database import Database

on_session_loop = pytest.mark.asyncio(loop_scope="session")


@on_session_loop
async def test_bundle_is_signed_and_deltas_are_exact(migrated_db: Database, tmp_path: Path) -> None:
    repo = StrategyRepository(migrated_db)
    original = load_builtin()
    v1 = await repo.publish(original)
    key = load_or_create_signing_key(None, tmp_path)
    builder = BundleBuilder(repo, key)

    full = await builder.build()
    bundle = json.loads(full.body)
    assert bundle["version"] == v1.version and bundle["full"] is True and bundle["keyId"] == key.key_id
    assert len(bundle["strategies"]) == len(original)
    assert verify(bundle, key.public_raw)
    tampered = {**bundle, "strategies": bundle["strategies"][1:]}
    assert not verify(tampered, key.public_raw)
    assert not verify(bundle, Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    assert (await builder.build()).etag == full.etag  # same content, same bytes, same tag

    # A content change: one strategy edited, one removed, one added.
    edited = [replace(s, title=s.title + " (revised)") if s.id == "sleep-nap" else s for s in original]
    edited = [s for s in edited if s.id != "focus-pomodoro"]
    edited.append(replace(original[0], id="goals-new-one", title="A brand new strategy"))
    v2 = await repo.publish(edited)
    delta = json.loads((await builder.build(since=v1.version)).body)
    assert delta["full"] is False and delta["since"] == v1.version and delta["version"] == v2.version
    assert [s["id"] for s in delta["changes"]["added"]] == ["goals-new-one"]
    assert [s["id"] for s in delta["changes"]["updated"]] == ["sleep-nap"]
    assert delta["changes"]["updated"][0]["title"].endswith("(revised)")
    assert delta["changes"]["removed"] == ["focus-pomodoro"]
    assert verify(delta, key.public_raw)

    # Applying the delta to the v1 bundle gives exactly the v2 full bundle.
    held = {s["id"]: s for s in bundle["strategies"]}
    for s in delta["changes"]["added"] + delta["changes"]["updated"]:
        held[s["id"]] = s
    for sid in delta["changes"]["removed"]:
        del held[sid]
    full2 = json.loads((await builder.build()).body)
    assert sorted(held.values(), key=lambda s: s["id"]) == full2["strategies"]
    assert (await builder.build()).etag != full.etag

    nothing_new = json.loads((await builder.build(since=v2.version)).body)
    assert nothing_new["changes"] == {"added": [], "updated": [], "removed": []}

    unknown = json.loads((await builder.build(since="not-a-version")).body)
    assert unknown["full"] is True and unknown["sinceUnknown"] is True and len(unknown["strategies"]) == len(edited)


def test_signing_key_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    key = load_or_create_signing_key(None, tmp_path)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_signing_key(None, tmp_path).key_id == key.key_id


def test_configured_key_in_every_accepted_form() -> None:
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())  # fmt: skip
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()  # fmt: skip
    expected = private.public_key().public_bytes_raw()
    for value in (seed.hex(), base64.b64encode(seed).decode(), pem):
        assert parse_signing_key(value).public_raw == expected
    for bad in ("abc", "00" * 31, "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----"):
        with pytest.raises((SigningKeyError, ValueError)):
            parse_signing_key(bad)
