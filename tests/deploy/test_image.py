"""The image, built and started with podman: non-root, read-only root filesystem, /healthz, /version.

Marked ``image``. It runs only where it is cheap: podman is installed, the Debian base image is already there
(`make image-base`: debootstrap, no registry needed) and the host's compiled llama-cpp-python wheel exists, which the
build reuses instead of compiling for many minutes. Anywhere else it is skipped with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
BASE = "docker.io/library/debian:bookworm-slim"
WHEELHOUSE = Path.home() / ".cache" / "upcoach-wheels" / "llama-cpp-python-0.3.36-noamx"
TAG = "localhost/upcoach:test"

pytestmark = pytest.mark.image


def _why_not_cheap() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed"
    if subprocess.run(["podman", "image", "exists", BASE], capture_output=True).returncode != 0:
        return f"no {BASE} image: run `make image-base` (debootstrap) once"
    if not list(WHEELHOUSE.glob("llama_cpp_python-*.whl")):
        return "the host's llama-cpp-python wheel is missing (make install builds it)"
    return None


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def image() -> str:
    reason = _why_not_cheap()
    if reason:
        pytest.skip(reason)
    wheelhouse = ROOT / "deploy" / "wheelhouse"
    for wheel in WHEELHOUSE.glob("llama_cpp_python-*.whl"):
        shutil.copy(wheel, wheelhouse / wheel.name)  # build context; git ignores it
    for ca in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy(ca, ROOT / "deploy" / "ca" / ca.name)  # this host's proxy CAs, for pip inside the build
    # docker format keeps HEALTHCHECK (OCI drops it); chroot isolation builds inside a container without cgroups.
    podman("build", "--format", "docker", "--isolation", "chroot", "-f", "deploy/Dockerfile", "-t", TAG,
           "--build-arg", "BUILD=image-test", str(ROOT))  # fmt: skip
    return TAG


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[tuple[str, str]]:
    name, volume, port = f"upcoach-test-{uuid.uuid4().hex[:8]}", f"upcoach-test-{uuid.uuid4().hex[:8]}", free_port()
    podman("run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "-v", f"{volume}:/data",
           "--network", "host", "-e", f"UPCOACH_PORT={port}", "-e", "UPCOACH_HOST=127.0.0.1",
           "-e", "UPCOACH_AUTH=off", "-e", "UPCOACH_LOAD_MODEL=false", image)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # readiness wait, not a timed assertion
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(podman("logs", name, check=False).stderr)
        yield name, base
    finally:
        podman("rm", "-f", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)


def test_the_image_serves_as_a_non_root_user_on_a_read_only_root(container: tuple[str, str]) -> None:
    name, base = container
    assert httpx.get(base + "/version").json()["build"] == "image-test"
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    assert podman("exec", name, "touch", "/opt/upcoach/x", check=False).returncode != 0  # read-only root
    assert podman("exec", name, "touch", "/data/x", check=False).returncode == 0  # the data volume is writable
    assert podman("healthcheck", "run", name, check=False).returncode == 0
    logs = podman("logs", name).stderr.strip().splitlines()
    assert logs and all(line.startswith("{") for line in logs)  # JSON logs by default
