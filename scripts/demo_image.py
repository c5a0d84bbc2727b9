"""The demo's container image: Debian's static busybox and two tiny shell programs.

``backend`` serves its pod's name and node over HTTP; ``frontend`` serves
``/cgi-bin/ask``, which fetches ``http://backend.<ns>.svc.cluster.local`` by name
(cluster DNS, then the Service's cluster IP) and says who answered. It is written
as a ``docker save`` archive for ``shoal image import``, so no registry is needed.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import orjson

from shoal.node.images import host_platform, layer_tar, sha256_digest

BUSYBOX = Path("/bin/busybox")
APPLETS = ["sh", "cat", "echo", "printf", "mkdir", "nc", "httpd", "tail", "nslookup", "sleep",
           "hostname", "ip", "grep", "head"]

BACKEND = """#!/bin/sh
mkdir -p /tmp/www
echo "$POD_NAME on $NODE_NAME" > /tmp/www/index.html
exec httpd -f -p 8080 -h /tmp/www
"""

FRONTEND = """#!/bin/sh
exec httpd -f -p 8080 -h /app/www
"""

# busybox httpd runs this per request, with the pod's environment (NODE_NAME, BACKEND).
ASK = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
body=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 "$BACKEND" 80 | tail -n 1)
echo "frontend on $NODE_NAME <- ${body:-no answer from $BACKEND}"
"""


def is_static(elf: bytes) -> bool:
    """Whether a 64-bit ELF has no PT_INTERP header (no dynamic loader needed)."""
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    size, count = (int.from_bytes(elf[o:o + 2], "little") for o in (0x36, 0x38))
    return not any(int.from_bytes(elf[phoff + i * size:phoff + i * size + 4], "little") == 3
                   for i in range(count))


def missing() -> str | None:
    """Why the image cannot be built here, or None."""
    if not BUSYBOX.exists():
        return f"{BUSYBOX} is missing (Debian package busybox-static)"
    if not is_static(BUSYBOX.read_bytes()):
        return f"{BUSYBOX} is dynamically linked (install busybox-static, not busybox)"
    return None


def write_image(path: Path, tag: str) -> None:
    """The image as a ``docker save`` archive: manifest.json, the config, one layer."""
    files: list[tuple[str, bytes | str, int]] = [("bin/busybox", BUSYBOX.read_bytes(), 0o755)]
    files += [(f"bin/{a}", "busybox", 0o777) for a in APPLETS]
    files += [("app/backend", BACKEND.encode(), 0o755), ("app/frontend", FRONTEND.encode(), 0o755),
              ("app/www/cgi-bin/ask", ASK.encode(), 0o755),
              ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644), ("tmp/.keep", b"", 0o644)]
    layer = layer_tar(files)
    os_, arch = host_platform()
    config = orjson.dumps({
        "os": os_, "architecture": arch,
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]}})
    config_name = sha256_digest(config).split(":")[1] + ".json"
    with tarfile.open(path, "w") as tar:
        for name, data in (("layer0/layer.tar", layer), (config_name, config),
                           ("manifest.json", orjson.dumps([{"Config": config_name,
                                                            "RepoTags": [tag],
                                                            "Layers": ["layer0/layer.tar"]}]))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
