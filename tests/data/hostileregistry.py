#!/usr/bin/env python3
"""A hostile registry on 127.0.0.1 for tests/pull_hostile.rs: each repository is one attack.

    hostileregistry.py PORTFILE LOGFILE --arch ARCH [--foreign-port PORT] [--bomb-size BYTES]
                       [--realm URL]
    hostileregistry.py PORTFILE LOGFILE --foreign

Repositories (any tag; no authentication):

  hostile/manifest-huge   a 2 GiB manifest, chunked (no Content-Length), generated as it is
                          sent and never held in memory
  hostile/error-huge      a small image whose layer answers 404 with a 2 GiB error body
  hostile/config-huge     a manifest whose config is 1 GiB (declared and served)
  hostile/blob-huge       a layer declared and served as 4 GiB of zeros (its digest is not
                          theirs: it is never meant to arrive whole)
  hostile/foreign         a layer the registry 404s, whose descriptor's `urls` name the
                          foreign server (--foreign-port), which serves it
  hostile/foreign-missing the same, with `urls` the foreign server 404s
  hostile/redirect        a small image whose layer redirects to itself, again and again
  hostile/trickle         a manifest sent at one byte per second
  hostile/trickle-blob    a small image whose layer is sent at one byte per second
  hostile/bomb            a gzip layer of a few MB that expands to --bomb-size bytes of zeros,
                          with a config whose diff_id is right (only with --bomb-size)

With --realm, /v2/ answers 401 with a bearer challenge naming URL as the token service
(cloud metadata's address, say). With --foreign it is the second server instead: it serves the foreign layer at
/layer/DIGEST and 404s everything else. Both log each request line to LOGFILE. The port
goes to PORTFILE once everything is ready. Serves until killed.
"""

import gzip
import hashlib
import http.server
import io
import json
import os
import sys
import tarfile
import time

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_FOREIGN = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
GiB = 1 << 30
MiB = 1 << 20


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def small_layer(text):
    """A gzip tar with one file, and the digest of the uncompressed tar."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        data = text.encode()
        info = tarfile.TarInfo("hello")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), sha256(plain)


class Bomb:
    """A tar of one file of `size` zeros as concatenated gzip members: the header, the
    same compressed MiB of zeros repeated, the end blocks. Held as those three pieces."""

    def __init__(self, size):
        assert size % MiB == 0
        info = tarfile.TarInfo("zeros")
        info.size = size
        info.mode = 0o644
        header = info.tobuf(tarfile.GNU_FORMAT)
        self.head = gzip.compress(header, mtime=0)
        self.chunk = gzip.compress(b"\0" * MiB, mtime=0)
        self.count = size // MiB
        self.tail = gzip.compress(b"\0" * 1024, mtime=0)
        blob = hashlib.sha256(self.head)
        plain = hashlib.sha256(header)
        zeros = b"\0" * MiB
        for _ in range(self.count):
            blob.update(self.chunk)
            plain.update(zeros)
        blob.update(self.tail)
        plain.update(b"\0" * 1024)
        self.digest = "sha256:" + blob.hexdigest()
        self.diff_id = "sha256:" + plain.hexdigest()
        self.size = len(self.head) + self.count * len(self.chunk) + len(self.tail)

    def write(self, out):
        out.write(self.head)
        for _ in range(self.count):
            out.write(self.chunk)
        out.write(self.tail)


class State:
    arch = "amd64"
    foreign_port = None
    realm = None
    log = None
    manifests = {}  # repository -> manifest bytes
    blobs = {}  # digest -> bytes
    huge_config = None  # (digest, size)
    huge_blob = None  # (digest, size)
    bomb = None
    foreign_layer = None  # (bytes, digest)


def config(diff_ids):
    doc = {
        "architecture": State.arch,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    data = json.dumps(doc).encode()
    State.blobs[sha256(data)] = data
    return {"mediaType": OCI_CONFIG, "digest": sha256(data), "size": len(data)}


def manifest(repo, config_desc, layers):
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": layers,
    }
    State.manifests[repo] = json.dumps(doc).encode()


def build(bomb_size):
    layer, diff_id = small_layer("hello from the hostile registry\n")
    State.blobs[sha256(layer)] = layer
    plain_layer = {"mediaType": LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}

    # error-huge and trickle-blob: an ordinary image whose layer misbehaves.
    odd, odd_diff = small_layer("this layer is never served whole\n")
    odd_desc = {"mediaType": LAYER_GZIP, "digest": sha256(odd), "size": len(odd)}
    State.trickled_blob = (sha256(odd), odd)
    manifest("hostile/error-huge", config([odd_diff]), [odd_desc])
    manifest("hostile/trickle-blob", config([odd_diff]), [odd_desc])
    manifest("hostile/redirect", config([odd_diff]), [odd_desc])
    manifest("hostile/trickle", config([diff_id]), [plain_layer])

    # config-huge: 1 GiB of zeros, declared as such.
    zeros = hashlib.sha256()
    block = b"\0" * MiB
    for _ in range(1024):
        zeros.update(block)
    State.huge_config = ("sha256:" + zeros.hexdigest(), GiB)
    manifest(
        "hostile/config-huge",
        {"mediaType": OCI_CONFIG, "digest": State.huge_config[0], "size": GiB},
        [plain_layer],
    )

    # blob-huge: a layer as large as it says, and larger than the free space may allow.
    State.huge_blob = ("sha256:" + "0" * 64, 4 * GiB)
    huge_desc = {"mediaType": LAYER_GZIP, "digest": State.huge_blob[0], "size": 4 * GiB}
    manifest("hostile/blob-huge", config([diff_id]), [huge_desc])

    # foreign: the layer lives only on the foreign server.
    far, far_diff = small_layer("hello from a foreign host\n")
    State.foreign_layer = (far, sha256(far))
    for repo, path in [("hostile/foreign", "/layer/" + sha256(far)), ("hostile/foreign-missing", "/missing")]:
        desc = {
            "mediaType": LAYER_FOREIGN,
            "digest": sha256(far),
            "size": len(far),
            "urls": [f"http://127.0.0.1:{State.foreign_port}{path}"],
        }
        manifest(repo, config([far_diff]), [desc])

    if bomb_size is None:
        return
    State.bomb = Bomb(bomb_size)
    bomb_desc = {"mediaType": LAYER_GZIP, "digest": State.bomb.digest, "size": State.bomb.size}
    manifest("hostile/bomb", config([State.bomb.diff_id]), [bomb_desc])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send(self, code, body=b"", content_type="application/json", headers=None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, code, err, message):
        body = json.dumps({"errors": [{"code": err, "message": message}]}).encode()
        self.send(code, body)

    def chunked(self, code, content_type, pieces):
        """Sends the generator's pieces chunked until it ends or the client leaves."""
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for piece in pieces:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def trickle(self, data, content_type):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(1)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self):
        with open(State.log, "a") as f:
            f.write(f"{self.command} {self.path}\n")
        if State.foreign_port is None:
            return self.foreign()
        path = self.path.split("?")[0]
        if path == "/v2/" and State.realm:
            body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
            challenge = f'Bearer realm="{State.realm}",service="hostile"'
            return self.send(401, body, headers={"WWW-Authenticate": challenge})
        if path == "/v2/":
            return self.send(200, b"{}")
        if not path.startswith("/v2/"):
            return self.error(404, "NOT_FOUND", "not found")
        repo, _, rest = path[len("/v2/") :].partition("/manifests/")
        if rest:
            return self.manifest(repo)
        repo, _, digest = path[len("/v2/") :].partition("/blobs/")
        if digest:
            return self.blob(repo, digest)
        self.error(404, "NOT_FOUND", "not found")

    def manifest(self, repo):
        if repo == "hostile/manifest-huge":
            return self.chunked(200, OCI_MANIFEST, huge_manifest())
        if repo not in State.manifests:
            return self.error(404, "NAME_UNKNOWN", "repository name not known to registry")
        body = State.manifests[repo]
        if repo == "hostile/trickle":
            return self.trickle(body, OCI_MANIFEST)
        self.send(200, body, OCI_MANIFEST, {"Docker-Content-Digest": sha256(body)})

    def blob(self, repo, digest):
        trickled, odd = State.trickled_blob
        if digest == trickled and repo == "hostile/error-huge":
            return self.chunked(404, "application/json", huge_error())
        if digest == trickled and repo == "hostile/redirect":
            # Round and round on this server: the tests never name an address off this
            # machine, even to see that sbx refuses it (hosts.rs's unit tests do that).
            n = int(self.path.rsplit("n=", 1)[1]) + 1 if "n=" in self.path else 1
            self.send_response(307)
            self.send_header("Location", f"{self.path.split('?')[0]}?n={n}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if digest == trickled and repo == "hostile/trickle-blob":
            return self.trickle(odd, "application/octet-stream")
        huge = {State.huge_config[0]: GiB, State.huge_blob[0]: 4 * GiB}
        if digest in huge:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(huge[digest]))
            self.end_headers()
            try:
                block = b"\0" * MiB
                for _ in range(huge[digest] // MiB):
                    self.wfile.write(block)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return
        if State.bomb is not None and digest == State.bomb.digest:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(State.bomb.size))
            self.end_headers()
            try:
                State.bomb.write(self.wfile)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return
        if digest in State.blobs:
            return self.send(200, State.blobs[digest], "application/octet-stream")
        self.error(404, "BLOB_UNKNOWN", "blob unknown to registry")

    def foreign(self):
        data, digest = State.foreign_layer
        if self.path == "/layer/" + digest:
            return self.send(200, data, "application/octet-stream")
        self.send(404, b"nothing here\n", "text/plain")


def huge_manifest():
    yield b'{"schemaVersion":2,"mediaType":"%s","annotations":{"pad":"' % OCI_MANIFEST.encode()
    block = b"A" * (64 << 10)
    for _ in range(2 * GiB // len(block)):
        yield block
    yield b'"}}'


def huge_error():
    yield b'{"errors":[{"code":"BLOB_UNKNOWN","message":"'
    block = b"x" * (64 << 10)
    for _ in range(2 * GiB // len(block)):
        yield block
    yield b'"}]}'


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    portfile, State.log = argv[1], argv[2]
    rest = argv[3:]
    foreign = "--foreign" in rest
    if foreign:
        data, _ = small_layer("hello from a foreign host\n")
        State.foreign_layer = (data, sha256(data))
    else:
        State.arch = rest[rest.index("--arch") + 1]
        State.foreign_port = int(rest[rest.index("--foreign-port") + 1]) if "--foreign-port" in rest else 9
        bomb = int(rest[rest.index("--bomb-size") + 1]) if "--bomb-size" in rest else None
        State.realm = rest[rest.index("--realm") + 1] if "--realm" in rest else None
        build(bomb)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, portfile)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
