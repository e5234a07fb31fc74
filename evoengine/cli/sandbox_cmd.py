"""``evo sandbox build`` and ``evo sandbox status``: the Docker sandbox image."""

from __future__ import annotations

import argparse
import sys
import time

from evoengine.config.schema import SandboxConfig
from evoengine.errors import first_line
from evoengine.evaluation.sandbox.image_build import DEFAULT_MIRROR
from evoengine.terminal import shown

DEFAULT_TAG = SandboxConfig().image


def add_sandbox_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``evo sandbox {build,status}``."""
    sandbox = commands.add_parser("sandbox", help="build or inspect the Docker sandbox image")
    actions = sandbox.add_subparsers(dest="sandbox_command", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build", help="build the sandbox image (offline from a Debian mirror by default)",
        description="Build the Docker sandbox image. Default (--offline): debootstrap a "
                    "Debian root filesystem from --mirror and import it, so no container "
                    "registry is needed (root and debootstrap required). --registry: build "
                    "FROM python:3.11-slim with pip (needs Docker Hub and PyPI).")
    how = build.add_mutually_exclusive_group()
    how.add_argument("--offline", dest="offline", action="store_true", default=True,
                     help="debootstrap + docker import (default)")
    how.add_argument("--registry", dest="offline", action="store_false",
                     help="FROM python:3.11-slim, pip install numpy scipy")
    build.add_argument("--tag", default=DEFAULT_TAG, help=f"image name (default {DEFAULT_TAG})")
    build.add_argument("--mirror", default=DEFAULT_MIRROR,
                       help=f"Debian mirror for --offline (default {DEFAULT_MIRROR})")
    build.add_argument("--rebuild-base", action="store_true",
                       help="debootstrap the base root filesystem again even if it exists")
    status = actions.add_parser("status", help="is there a daemon and an image; what "
                                               "sandbox=auto would pick")
    status.add_argument("--tag", default=DEFAULT_TAG, help=f"image name (default {DEFAULT_TAG})")


def sandbox_command(args: argparse.Namespace) -> int:
    if args.sandbox_command == "build":
        return build_command(args.offline, args.tag, args.mirror, args.rebuild_base)
    return status_command(args.tag)


def build_command(offline: bool, tag: str, mirror: str, rebuild_base: bool) -> int:
    from evoengine.evaluation.sandbox.image_build import ImageBuildError, build_image

    started = time.monotonic()
    try:
        build_image(offline=offline, tag=tag, mirror=mirror, rebuild=rebuild_base,
                    log=lambda line: print(line, flush=True))
    except ImageBuildError as exc:  # it may quote a build tool's output
        print(f"evo: error: {shown(str(exc))}", file=sys.stderr)
        return 2
    print(f"built {tag} in {time.monotonic() - started:.0f} s; `sandbox=auto` now uses it "
          "(or name it: sandbox=docker)")
    return 0


def status_command(tag: str) -> int:
    from evoengine.evaluation.sandbox.docker_sandbox import LABEL, docker_unavailable_reason
    from evoengine.evaluation.sandbox.image_build import BASE_IMAGE

    reason = docker_unavailable_reason(tag)
    daemon, images, leftovers = _describe_daemon(tag, BASE_IMAGE, LABEL)
    print(f"daemon: {daemon}")
    for line in images:
        print(line)
    if leftovers:
        print(f"containers: {leftovers} labelled {LABEL}=1 "
              f"(docker ps -a --filter label={LABEL}=1)")
    if reason is None:
        print("sandbox=auto: docker")
    else:
        print(f"sandbox=auto: process ({reason})")
    return 0


def _describe_daemon(tag: str, base: str, label: str) -> tuple[str, list[str], int]:
    """(daemon line, image lines, number of sandbox containers) without raising."""
    try:
        import docker
    except ImportError:
        return "the Docker SDK is not installed (pip install 'evoengine[docker]')", [], 0
    try:
        client = docker.from_env(timeout=10)
        version = client.version().get("Version", "?")
    except (docker.errors.DockerException, OSError) as exc:
        return f"not answering ({first_line(exc, 200)})", [], 0
    lines = []
    try:
        for name in (tag, base):
            try:
                image = client.images.get(name)
            except docker.errors.ImageNotFound:
                lines.append(f"image {name}: missing")
                continue
            size_mb = (image.attrs.get("Size") or 0) / 1e6
            created = str(image.attrs.get("Created", ""))[:19].replace("T", " ")
            lines.append(f"image {name}: {image.short_id}, {size_mb:.0f} MB, built {created}")
        leftovers = len(client.containers.list(all=True, filters={"label": f"{label}=1"}))
    finally:
        client.close()
    return f"Docker {version} answers", lines, leftovers
