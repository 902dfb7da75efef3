#!/usr/bin/env python3
"""Builds test images for tests/images.rs from a static busybox, without the network.

    mkimage.py rootfs OUT.tar[.gz|.xz|.zst]    one-layer root filesystem tarball
    mkimage.py dir OUT                         the same tree as a plain directory (no chown)
    mkimage.py docker-archive OUT.tar[.gz|..]  two layers, the second with whiteouts
    mkimage.py docker-archive-1 OUT.tar        the base layer alone, as a docker-archive (the
        second layer's hard link into the first is more than containerd imports)
    mkimage.py oci-dir OUT                     the same as an OCI layout (gzip layers)
    mkimage.py oci-tar OUT.tar                 the same as an OCI layout in a tar
    mkimage.py hostile-KIND OUT TARGET         an archive that tries to write to TARGET:
        dotdot, absolute, symlink, hardlink, symlink-layer (OCI), digest (OCI, tampered)
    mkimage.py user OUT.tar USER PASSWD        a docker-archive whose config's User is USER and
        whose /etc/passwd is PASSWD: file (carol, uid 777), host (a link to /etc/passwd),
        zero (a link to /dev/zero), fifo, big (2 MiB), relative (a link in a second layer
        to ../usr/lib/passwd of the first, where carol is uid 778)
    mkimage.py big OUT.tar SIZE_MB             a rootfs tarball with SIZE_MB of random data
    mkimage.py source-tree OUT.tar FILES       a tar of FILES small files in nested directories
                                               (a stand-in for a source tarball, for ci/bench.sh)
    mkimage.py standin OUT                     the base tree plus /bin/bash (a script running
        busybox sh), standing in for a distribution's image in the docs' examples (ci/docs.py):
        a rootfs tarball when OUT ends in .tar[.gz|.xz|.zst], else an OCI layout directory
        whose config sets only PATH

The base tree: /bin/busybox and applet links, /etc/passwd and /etc/group, files owned by
uids 0, 1000 and 4242 with modes 0600, 0750 and 4755, a hard link, a symlink, a FIFO and
a character device (which an unprivileged import skips).
"""

import gzip
import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile

BUSYBOX = os.environ.get("BUSYBOX", "/bin/busybox")
APPLETS = ["sh", "ls", "cat", "echo", "id", "stat", "mkdir", "touch", "rm", "chown",
           "chmod", "test", "mv", "tar", "find", "wc", "sleep", "true", "pwd", "env",
           "readlink", "ln", "sha256sum", "gzip", "cp", "du", "xargs"]
MTIME = 1700000000


def info(name, kind=tarfile.REGTYPE, mode=0o644, uid=0, gid=0, size=0, link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.uid, ti.gid, ti.size, ti.linkname = kind, mode, uid, gid, size, link
    ti.mtime = MTIME
    return ti


def add_file(tar, name, data, **kw):
    tar.addfile(info(name, size=len(data), **kw), io.BytesIO(data))


def base_layer(tar):
    tar.addfile(info("./", tarfile.DIRTYPE, 0o755))
    for d in ["bin", "etc", "tmp", "home", "root", "srv", "dev", "proc", "data"]:
        tar.addfile(info(d + "/", tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
    with open(BUSYBOX, "rb") as f:
        add_file(tar, "bin/busybox", f.read(), mode=0o755)
    for applet in APPLETS:
        tar.addfile(info("bin/" + applet, tarfile.SYMTYPE, 0o777, link="busybox"))
    tar.addfile(info("bin/busybox-hardlink", tarfile.LNKTYPE, 0o755, link="bin/busybox"))
    add_file(tar, "etc/passwd",
             b"root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"
             b"bob:x:4242:4242::/srv:/bin/sh\n")
    add_file(tar, "etc/group", b"root:x:0:\nalice:x:1000:\nbob:x:4242:\n")
    add_file(tar, "etc/shadow", b"root:*:19000::::::\n", mode=0o600)
    tar.addfile(info("home/alice/", tarfile.DIRTYPE, 0o750, uid=1000, gid=1000))
    add_file(tar, "home/alice/notes", b"alice's\n", mode=0o640, uid=1000, gid=1000)
    add_file(tar, "srv/bob-tool", b"#!/bin/sh\necho bob\n", mode=0o4755, uid=4242, gid=4242)
    tar.addfile(info("data/fifo", tarfile.FIFOTYPE, 0o644))
    dev = info("dev/null", tarfile.CHRTYPE, 0o666)
    dev.devmajor, dev.devminor = 1, 3
    tar.addfile(dev)
    add_file(tar, "data/removed-later", b"gone in layer 2\n")
    tar.addfile(info("data/opaque/", tarfile.DIRTYPE, 0o755))
    add_file(tar, "data/opaque/old", b"hidden by the opaque marker\n")
    tar.addfile(info("data/link", tarfile.SYMTYPE, 0o777, link="../etc/passwd"))


def second_layer(tar):
    tar.addfile(info("data/", tarfile.DIRTYPE, 0o755))
    add_file(tar, "data/.wh.removed-later", b"")
    tar.addfile(info("data/opaque/", tarfile.DIRTYPE, 0o755))
    add_file(tar, "data/opaque/.wh..wh..opq", b"")
    add_file(tar, "data/opaque/new", b"from layer 2\n")
    add_file(tar, "data/layer2", b"layer 2 was here\n")
    # A hard link to a file of the layer below (copied up by the import).
    tar.addfile(info("etc/passwd.hl", tarfile.LNKTYPE, 0o644, link="etc/passwd"))


def standin_layer(tar):
    base_layer(tar)
    add_file(tar, "bin/bash", b'#!/bin/sh\nexec /bin/sh "$@"\n', mode=0o755)


def standin(out):
    layer = tar_bytes(standin_layer)
    if ".tar" in os.path.basename(out):
        with open(out, "wb") as f:
            f.write(compress(layer, out))
        return
    env = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]}
    for name, data in oci_members([layer], image_config=env):
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def tar_bytes(fill):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        fill(tar)
    return buf.getvalue()


def compress(data, path):
    if path.endswith(".gz"):
        return gzip.compress(data, mtime=0)
    if path.endswith(".xz"):
        return lzma.compress(data)
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE,
                              check=True).stdout
    return data


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config(diff_ids, image_config=None):
    if image_config is None:
        image_config = {"Env": ["PATH=/bin", "IMAGE_VAR=from-image"], "WorkingDir": "/srv",
                        "User": "4242:4242"}
    return json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()


def write_tar(path, members):
    """members: list of (name, bytes); a tar holding them."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            add_file(tar, name, data)


def docker_archive(out, layers):
    cfg = config([sha(l) for l in layers])
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    members = [(cfg_name, cfg)]
    names = []
    for i, layer in enumerate(layers):
        names.append(f"layer{i}/layer.tar")
        members.append((names[-1], layer))
    manifest = [{"Config": cfg_name, "RepoTags": ["test:latest"], "Layers": names}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    write_tar(out, members)


def oci_members(layers, tamper=False, image_config=None):
    """The files of an OCI layout: (path, bytes)."""
    blobs = []
    descs = []
    for layer in layers:
        gz = gzip.compress(layer, mtime=0)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": sha(gz), "size": len(gz)})
        if tamper:
            gz = gzip.compress(layer + b"\0" * 1024, mtime=0)
        blobs.append((descs[-1]["digest"], gz))
    cfg = config([sha(l) for l in layers], image_config)
    blobs.append((sha(cfg), cfg))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(cfg), "size": len(cfg)},
        "layers": descs,
    }).encode()
    blobs.append((sha(manifest), manifest))
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    files = [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
             ("index.json", json.dumps(index).encode())]
    files += [("blobs/sha256/" + d.split(":")[1], b) for d, b in blobs]
    return files


def oci_dir(out, layers, tamper=False):
    for name, data in oci_members(layers, tamper):
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def plain_dir(out):
    """The base tree as a directory (owned by whoever runs this)."""
    data = tar_bytes(base_layer)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            if m.isdev():
                continue
            path = os.path.join(out, m.name)
            if m.isdir():
                os.makedirs(path, exist_ok=True)
                os.chmod(path, m.mode & 0o777 | 0o700)
            elif m.issym():
                os.symlink(m.linkname, path)
            elif m.islnk():
                os.link(os.path.join(out, m.linkname), path)
            elif m.isfifo():
                os.mkfifo(path)
            else:
                with open(path, "wb") as f:
                    f.write(tar.extractfile(m).read())
                os.chmod(path, m.mode & 0o777)


def hostile(kind, out, target):
    """An archive whose entries try to write TARGET/pwned (TARGET absolute)."""
    rel = os.path.relpath(target, "/")

    def base(tar):
        tar.addfile(info("bin/", tarfile.DIRTYPE, 0o755))
        with open(BUSYBOX, "rb") as f:
            add_file(tar, "bin/busybox", f.read(), mode=0o755)
        tar.addfile(info("bin/sh", tarfile.SYMTYPE, 0o777, link="busybox"))

    if kind == "dotdot":
        def fill(tar):
            base(tar)
            add_file(tar, "../" * 30 + rel + "/pwned", b"pwned\n")
    elif kind == "absolute":
        def fill(tar):
            base(tar)
            add_file(tar, target + "/pwned", b"pwned\n")
    elif kind == "symlink":
        def fill(tar):
            base(tar)
            tar.addfile(info("evil", tarfile.SYMTYPE, 0o777, link=target))
            add_file(tar, "evil/pwned", b"pwned\n")
    elif kind == "hardlink":
        def fill(tar):
            base(tar)
            tar.addfile(info("evil", tarfile.LNKTYPE, 0o644, link="../" * 30 + rel + "/victim"))
    elif kind == "symlink-layer":
        def evil(tar):
            base(tar)
            tar.addfile(info("evil", tarfile.SYMTYPE, 0o777, link=target))

        def through(tar):
            add_file(tar, "evil/pwned", b"pwned\n")
        return oci_dir(out, [tar_bytes(evil), tar_bytes(through)])
    elif kind == "digest":
        return oci_dir(out, [tar_bytes(base)], tamper=True)
    else:
        sys.exit(f"unknown hostile kind {kind}")
    with open(out, "wb") as f:
        f.write(tar_bytes(fill))


def user_image(out, user, passwd):
    """An image whose User is USER, with a crafted /etc/passwd (see the usage)."""
    carol = b"root:x:0:0:root:/root:/bin/sh\ncarol:x:777:779::/:/bin/sh\n"

    def base(tar):
        tar.addfile(info("./", tarfile.DIRTYPE, 0o755))
        for d in ["bin", "etc", "tmp", "usr", "usr/lib"]:
            tar.addfile(info(d + "/", tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
        with open(BUSYBOX, "rb") as f:
            add_file(tar, "bin/busybox", f.read(), mode=0o755)
        for applet in APPLETS:
            tar.addfile(info("bin/" + applet, tarfile.SYMTYPE, 0o777, link="busybox"))
        add_file(tar, "etc/group", b"root:x:0:\ncarol:x:779:\n")
        add_file(tar, "usr/lib/passwd", carol.replace(b"777", b"778"))
        if passwd == "file" or passwd == "relative":
            add_file(tar, "etc/passwd", carol)
        elif passwd == "host":
            tar.addfile(info("etc/passwd", tarfile.SYMTYPE, 0o777, link="/etc/passwd"))
        elif passwd == "zero":
            tar.addfile(info("etc/passwd", tarfile.SYMTYPE, 0o777, link="/dev/zero"))
        elif passwd == "fifo":
            tar.addfile(info("etc/passwd", tarfile.FIFOTYPE, 0o644))
        elif passwd == "big":
            add_file(tar, "etc/passwd", carol + b"#" * (2 << 20) + b"\n")
        else:
            sys.exit(f"unknown passwd kind {passwd}")

    def relink(tar):
        tar.addfile(info("etc/", tarfile.DIRTYPE, 0o755))
        tar.addfile(info("etc/passwd", tarfile.SYMTYPE, 0o777, link="../usr/lib/passwd"))

    layers = [tar_bytes(base)]
    if passwd == "relative":
        layers.append(tar_bytes(relink))
    cfg = json.loads(config([sha(l) for l in layers]))
    cfg["config"] = {"Env": ["PATH=/bin"], "User": user}
    cfg = json.dumps(cfg).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    members = [(cfg_name, cfg)]
    names = []
    for i, layer in enumerate(layers):
        names.append(f"layer{i}/layer.tar")
        members.append((names[-1], layer))
    manifest = [{"Config": cfg_name, "RepoTags": ["test:latest"], "Layers": names}]
    members.append(("manifest.json", json.dumps(manifest).encode()))
    write_tar(out, members)


def big(out, megabytes):
    def fill(tar):
        base_layer(tar)
        for i in range(megabytes):
            add_file(tar, f"data/blob{i}", os.urandom(1 << 20))
    with open(out, "wb") as f:
        f.write(tar_bytes(fill))


def source_tree(out, files):
    def fill(tar):
        for i in range(files):
            d = f"src/mod{i % 40:02d}/sub{i % 7}"
            body = (f"/* file {i} */\n" + "int x;\n" * (i % 200)).encode()
            add_file(tar, f"{d}/file{i}.c", body)
    with open(out, "wb") as f:
        f.write(tar_bytes(fill))


def recompress(path):
    """`docker save | gzip`: OUT.tar.gz and friends are compressed after the fact."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(compress(data, path))


def main():
    kind, out = sys.argv[1], sys.argv[2]
    layers = [tar_bytes(base_layer), tar_bytes(second_layer)]
    if kind == "rootfs":
        with open(out, "wb") as f:
            f.write(compress(tar_bytes(base_layer), out))
    elif kind == "dir":
        plain_dir(out)
    elif kind == "docker-archive":
        docker_archive(out, layers)
        recompress(out)
    elif kind == "docker-archive-1":
        docker_archive(out, layers[:1])
    elif kind == "oci-dir":
        oci_dir(out, layers)
    elif kind == "oci-tar":
        write_tar(out, oci_members(layers))
        recompress(out)
    elif kind.startswith("hostile-"):
        hostile(kind[len("hostile-"):], out, sys.argv[3])
    elif kind == "source-tree":
        source_tree(out, int(sys.argv[3]))
    elif kind == "big":
        big(out, int(sys.argv[3]))
    elif kind == "user":
        user_image(out, sys.argv[3], sys.argv[4])
    elif kind == "standin":
        standin(out)
    else:
        sys.exit(f"unknown kind {kind}")


if __name__ == "__main__":
    main()
