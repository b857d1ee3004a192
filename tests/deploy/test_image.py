"""The image, built and started with podman: non-root, read-only root filesystem, /healthz, /version.

Marked ``image``. It runs only where it is cheap: podman is installed, the Debian base image is already there
(`make image-base`: debootstrap, no registry needed) and the host's compiled llama-cpp-python wheel exists, which the
build reuses instead of compiling for many minutes. Anywhere else it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


class Running:
    """The image's server, run by podman, or (where this sandbox's OCI runtime cannot create containers: crun
    refuses its cgroups or rlimits) from the image's own read-only filesystem, chrooted as the image's user."""

    def __init__(self, image: str, port: int) -> None:
        self.image, self.port = image, port
        self.env = {"UPCOACH_PORT": str(port), "UPCOACH_HOST": "127.0.0.1", "UPCOACH_AUTH": "off",
                    "UPCOACH_LOAD_MODEL": "false"}  # fmt: skip
        self.name = f"upcoach-test-{uuid.uuid4().hex[:8]}"
        self.root: str | None = None
        self.mounts: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(f"/tmp/{self.name}.log")

    def start(self) -> None:
        env_args = [arg for k, v in self.env.items() for arg in ("-e", f"{k}={v}")]
        started = podman("run", "-d", "--name", self.name, "--read-only", "--tmpfs", "/tmp", "-v",
                         f"{self.name}:/data", "--network", "host", *env_args, self.image, check=False)  # fmt: skip
        if started.returncode == 0:
            return
        podman("rm", "-f", self.name, check=False)
        self.root = podman("image", "mount", self.image).stdout.strip()
        data = Path(f"/tmp/{self.name}-data")
        data.mkdir()
        os.chown(data, 10001, 10001)
        for source, target, kind in ((str(data), "data", "--bind"), ("/proc", "proc", "--bind"),
                                     ("/dev", "dev", "--bind"), ("tmpfs", "tmp", "-t")):  # fmt: skip
            args = [kind, "tmpfs", source] if kind == "-t" else [kind, source]
            subprocess.run(["mount", *args, f"{self.root}/{target}"], check=True)
            self.mounts.append(f"{self.root}/{target}")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.chroot("/opt/upcoach/entrypoint.sh", "serve", "--log-format", "json"),
                env={
                    "PATH": "/opt/upcoach/bin:/usr/bin:/bin",
                    "UPCOACH_DATA_DIR": "/data",
                    "HOME": "/data",
                    "UPCOACH_BUILD": self.config()["Env"]["UPCOACH_BUILD"],
                    **self.env,
                },  # fmt: skip
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def chroot(self, *command: str) -> list[str]:
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        return [chroot, "--userspec=10001:10001", str(self.root), *command]

    def config(self) -> dict[str, Any]:
        config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", self.image).stdout)
        config["Env"] = dict(item.split("=", 1) for item in config["Env"])
        return config  # type: ignore[no-any-return]

    def exec(self, *command: str) -> int:
        if self.root is None:
            return podman("exec", self.name, *command, check=False).returncode
        env = {"PATH": "/opt/upcoach/bin:/usr/bin:/bin"}
        return subprocess.run(self.chroot(*command), env=env, capture_output=True).returncode

    def logs(self) -> str:
        return podman("logs", self.name, check=False).stderr if self.root is None else self.log.read_text()

    def stop(self) -> None:
        if self.root is None:
            podman("rm", "-f", self.name, check=False)
            podman("volume", "rm", "-f", self.name, check=False)
            return
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
        for mount in reversed(self.mounts):
            subprocess.run(["umount", mount], check=False)
        podman("image", "unmount", self.image, check=False)
        shutil.rmtree(f"/tmp/{self.name}-data", ignore_errors=True)


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[Running]:
    running = Running(image, free_port())
    base = f"http://127.0.0.1:{running.port}"
    try:
        running.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # readiness wait, not a timed assertion
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(running.logs())
        yield running
    finally:
        running.stop()


def test_the_image_serves_as_a_non_root_user_on_a_read_only_root(container: Running) -> None:
    base = f"http://127.0.0.1:{container.port}"
    assert httpx.get(base + "/version").json()["build"] == "image-test"
    config = container.config()
    assert config["User"] == "10001:10001"
    assert "/data" in config["Volumes"]
    assert container.exec("touch", "/opt/upcoach/x") != 0  # read-only root
    assert container.exec("touch", "/data/x") == 0  # the data volume is writable
    inspected = json.loads(podman("image", "inspect", container.image).stdout)[0]
    healthcheck = inspected["Healthcheck"]["Test"]  # kept by the docker format
    assert healthcheck[0] == "CMD" and "127.0.0.1:8080/healthz" in healthcheck[-1]
    # The test's server listens on a free port of the host network, not on the image's 8080.
    assert container.exec(*healthcheck[1:-1], healthcheck[-1].replace(":8080/", f":{container.port}/")) == 0
    logs = container.logs().strip().splitlines()
    assert logs and all(line.startswith("{") for line in logs)  # JSON logs by default
