"""Build the Docker sandbox image (``evo sandbox build``).

Two ways, both ending in the same image (``sandbox/Dockerfile*``: Python 3 with
numpy and scipy, the in-sandbox runner at ``/opt/evoengine/sandbox/``, user 65534):

* offline (the default): ``debootstrap`` a Debian bookworm minbase root filesystem
  with ``python3``, ``python3-numpy`` and ``python3-scipy`` from a Debian mirror
  (any apt mirror or proxy works, no container registry needed), ``docker import``
  it as ``evoengine-sandbox-base:bookworm`` (kept, so later builds skip this step
  unless ``rebuild=True``), then build ``Dockerfile.offline`` on top, which only
  copies files and so needs no network;
* registry: build ``Dockerfile`` (``FROM python:3.11-slim`` and ``pip install``),
  for machines that reach Docker Hub and PyPI.

Every image carries the digest of the runner files it was built from (label
``evoengine.sandbox.runner``), so ``sandbox=auto`` can tell an image that predates
a change to the runner and asks for a rebuild instead of using it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from evoengine.errors import first_line
from evoengine.evaluation.sandbox.docker_sandbox import (
    DEFAULT_IMAGE,
    RUNNER_LABEL,
    runner_digest,
)
from evoengine.paths import resource_dir

BASE_IMAGE = "evoengine-sandbox-base:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-numpy", "python3-scipy")
# Left out of the imported root filesystem: package caches and documentation.
_NOT_IN_IMAGE = ("./proc/*", "./sys/*", "./dev/*", "./run/*", "./tmp/*",
                 "./var/cache/apt/archives/*.deb", "./var/lib/apt/lists/*",
                 "./usr/share/doc/*", "./usr/share/man/*", "./usr/share/info/*",
                 "./usr/share/locale/*")
_CHUNK = 1 << 20
_PER_PACKAGE = tuple(f"I: {verb} " for verb in ("Retrieving", "Validating", "Extracting",
                                                "Unpacking", "Configuring"))


class ImageBuildError(RuntimeError):
    """The image could not be built; the message is one line saying what to do."""


def build_image(offline: bool = True, tag: str = DEFAULT_IMAGE, mirror: str = DEFAULT_MIRROR,
                log: Callable[[str], None] = print, rebuild: bool = False) -> None:
    """Build the sandbox image ``tag`` (see the module docstring)."""
    client = _client()
    try:
        if offline:
            if rebuild or not _has_image(client, BASE_IMAGE):
                _make_base_image(client, mirror, log)
            else:
                log(f"base image {BASE_IMAGE} exists (--rebuild-base makes it again)")
        _build_runner_layer(client, "Dockerfile.offline" if offline else "Dockerfile", tag, log)
        _smoke_test(client, tag, log)
    finally:
        client.close()


def _client() -> Any:
    try:
        import docker
    except ImportError as exc:
        raise ImageBuildError("the Docker SDK is not installed: "
                              "pip install 'evoengine[docker]'") from exc
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise ImageBuildError(f"no Docker daemon answers ({first_line(exc, 200)}): start it "
                              "(`dockerd &` or `systemctl start docker`)") from exc
    return client


def _has_image(client: Any, name: str) -> bool:
    import docker.errors

    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


# ------------------------------------------------------- the offline base


def _debootstrap_command() -> str:
    found = shutil.which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if os.path.exists(p)), None)
    if found is None:
        raise ImageBuildError("debootstrap is missing: apt-get install debootstrap "
                              "(or use `evo sandbox build --registry`)")
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap must run as root: sudo evo sandbox build "
                              "(or use `evo sandbox build --registry`)")
    return found


def _make_base_image(client: Any, mirror: str, log: Callable[[str], None]) -> None:
    """debootstrap a root filesystem into a temporary folder and import it."""
    debootstrap = _debootstrap_command()
    parent = os.environ.get("TMPDIR") or "/var/tmp"
    rootfs = Path(tempfile.mkdtemp(prefix="evo-rootfs-", dir=parent))
    try:
        command = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}",
                   SUITE, str(rootfs), mirror]
        log("$ " + " ".join(command))
        _run_logged(command, log)
        _unmount_under(rootfs)
        log(f"importing the root filesystem as {BASE_IMAGE}")
        _import(client, rootfs)
    finally:
        _unmount_under(rootfs)
        shutil.rmtree(rootfs, ignore_errors=True)


def _run_logged(command: list[str], log: Callable[[str], None]) -> None:
    """Run ``command``, passing its output to ``log`` line by line (but for
    debootstrap's several hundred per-package lines)."""
    tail: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as proc:
        for line in proc.stdout:
            line = line.rstrip()
            if not line.startswith(_PER_PACKAGE):
                log(line)
            tail = [*tail[-19:], line]
    if proc.returncode != 0:
        last = next((t for t in reversed(tail) if t.startswith("E:")), tail[-1] if tail else "")
        hint = (": apt-get install debian-archive-keyring" if "key" in last.lower()
                else "; check --mirror and the network")
        raise ImageBuildError(f"debootstrap failed (exit status {proc.returncode}): "
                              f"{last}{hint}")


def _unmount_under(folder: Path) -> None:
    """Unmount anything a failed debootstrap left mounted inside ``folder``
    (deepest first), so that deleting the folder cannot reach the host's /proc."""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            points = [line.split()[1].replace("\\040", " ") for line in f]
    except OSError:
        return
    prefix = str(folder.resolve()) + "/"
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _import(client: Any, rootfs: Path) -> None:
    """Stream ``tar`` of ``rootfs`` into ``docker import`` (no tar file on disk)."""
    excludes = [f"--exclude={pattern}" for pattern in _NOT_IN_IMAGE]
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", *excludes,
                            "-cf", "-", "."], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def chunks() -> Iterator[bytes]:
        yield from iter(lambda: tar.stdout.read(_CHUNK), b"")

    repository, _, tag = BASE_IMAGE.partition(":")
    try:
        reply = client.api.import_image_from_stream(
            chunks(), repository=repository, tag=tag,
            changes=['ENV LANG=C.UTF-8', 'CMD ["python3"]'])
    finally:
        tar.stdout.close()
        error = tar.stderr.read().decode(errors="replace").strip()
        tar.stderr.close()
        status = tar.wait()
    if status != 0:
        raise ImageBuildError(f"tar of the root filesystem failed: {error[-300:]}")
    for line in str(reply).splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("error"):
            raise ImageBuildError(f"docker import failed: {message['error']}")


# --------------------------------------------------- the runner layer


def _build_runner_layer(client: Any, dockerfile: str, tag: str,
                        log: Callable[[str], None]) -> None:
    import docker.errors

    context = resource_dir("sandbox")
    log(f"building {tag} from {context / dockerfile}")
    try:
        for message in client.api.build(path=str(context), dockerfile=dockerfile, tag=tag,
                                        rm=True, forcerm=True, decode=True,
                                        labels={RUNNER_LABEL: runner_digest()}):
            if message.get("error"):
                detail = str(message["error"]).strip().splitlines()[-1]
                hint = ("; is a registry reachable? (the default, offline build needs none)"
                        if dockerfile == "Dockerfile" else "")
                raise ImageBuildError(f"docker build failed: {detail}{hint}")
            text = str(message.get("stream") or "").rstrip()
            if text:
                log(text)
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"docker build failed: {exc}") from exc


def _smoke_test(client: Any, tag: str, log: Callable[[str], None]) -> None:
    """Start the new image the way the sandbox does (no network, read-only, nobody)."""
    import docker.errors

    script = ("import numpy, scipy, sys; sys.path.insert(0, '/opt/evoengine/sandbox'); "
              "import runner; print('python', sys.version.split()[0], 'numpy', "
              "numpy.__version__, 'scipy', scipy.__version__)")
    try:
        out = client.containers.run(tag, ["python3", "-I", "-B", "-c", script],
                                    entrypoint=[], remove=True, network_mode="none",
                                    read_only=True, user="65534:65534",
                                    labels={"evoengine.sandbox": "1"})
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"the new image {tag} does not start: {exc}") from exc
    log(f"{tag}: {out.decode(errors='replace').strip()}")
