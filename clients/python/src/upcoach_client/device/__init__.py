"""The on-device runtime: pick and download the model (resumable, signature- and sha256-verified), run it with
llama-cpp-python, choose per request between device, server and later, answer offline from the verified
strategies bundle, keep an encrypted outbox and sync it exactly once."""

from upcoach_client.device.controller import Choice, DeviceState, decide
from upcoach_client.device.download import Downloaded, download_model, verify_file, verify_manifest
from upcoach_client.device.offline import StrategiesCache, verify_bundle
from upcoach_client.device.phone import Phone, Reply
from upcoach_client.device.runtime import LocalModel
from upcoach_client.device.store import LocalStore, OutboxItem, load_or_create_key
from upcoach_client.device.sync import Syncer, SyncReport

__all__ = [
    "Choice",
    "DeviceState",
    "Downloaded",
    "LocalModel",
    "LocalStore",
    "OutboxItem",
    "Phone",
    "Reply",
    "StrategiesCache",
    "SyncReport",
    "Syncer",
    "decide",
    "download_model",
    "load_or_create_key",
    "verify_bundle",
    "verify_file",
    "verify_manifest",
]
