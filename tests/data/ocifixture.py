#!/usr/bin/env python3
"""Builds a tiny OCI image layout from the host's static busybox, for the pull tests.

    ocifixture.py OUTDIR TAG ARCH [ARCH...]

Each image has two gzip layers: /bin/busybox with a few applet links (shared by every
architecture), then /etc/sbx-fixture saying "arch=ARCH tag=TAG". With one ARCH, index.json
names that image's manifest; with several, it names an image index listing one manifest
per architecture (push it with `skopeo copy --all`). Everything is deterministic (mtime 0,
owner 0), so the same input gives the same digests. Prints the digest index.json names.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "ls", "cat", "echo"]


def tar_bytes(entries):
    """entries: (name, kind, payload) with kind "dir", "file" or "link"."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = payload
                info.mode = 0o777
                tar.addfile(info)
            else:
                info.size = len(payload)
                info.mode = 0o755
                tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def blob(self, data, media_type):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.root, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}

    def json_blob(self, value, media_type):
        return self.blob(json.dumps(value, sort_keys=True).encode(), media_type)


def layer(layout, tar):
    gz = gzip.compress(tar, mtime=0)
    desc = layout.blob(gz, "application/vnd.oci.image.layer.v1.tar+gzip")
    return desc, "sha256:" + hashlib.sha256(tar).hexdigest()


def image(layout, busybox_layer, arch, tag):
    marker = tar_bytes(
        [("etc", "dir", None), ("etc/sbx-fixture", "file", f"arch={arch} tag={tag}\n".encode())]
    )
    layers = [busybox_layer, layer(layout, marker)]
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
        "history": [{"created_by": "ocifixture.py"}],
    }
    config_desc = layout.json_blob(config, "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [desc for desc, _ in layers],
    }
    desc = layout.json_blob(manifest, manifest["mediaType"])
    desc["platform"] = {"os": "linux", "architecture": arch}
    return desc


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    out, tag, arches = argv[1], argv[2], argv[3:]
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    entries = [("bin", "dir", None), ("bin/busybox", "file", busybox)]
    entries += [(f"bin/{a}", "link", "busybox") for a in APPLETS]
    layout = Layout(out)
    busybox_layer = layer(layout, tar_bytes(entries))
    manifests = [image(layout, busybox_layer, arch, tag) for arch in arches]
    if len(manifests) == 1:
        top = manifests[0]
    else:
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }
        top = layout.json_blob(index, index["mediaType"])
    top = dict(top, annotations={"org.opencontainers.image.ref.name": tag})
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [top]}, f)
    print(top["digest"])


if __name__ == "__main__":
    main(sys.argv)
