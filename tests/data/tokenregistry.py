#!/usr/bin/env python3
"""A read-only registry with bearer-token auth, as Docker Hub and quay.io do it, serving
one OCI layout (written by ocifixture.py) on 127.0.0.1, for the pull tests.

    tokenregistry.py LAYOUT REPOSITORY PORTFILE [--user USER:PASSWORD] [--reject-tokens]

Every /v2/ request without a valid token gets 401 and a `WWW-Authenticate: Bearer` challenge
naming /token on the same server. /token hands out a token to anyone, or with --user only
to a client that sends those basic credentials (else 401). With --reject-tokens the
registry refuses even the tokens it issued (the "401 after the token" case). Writes the
port it listens on to PORTFILE, serves until killed.
"""

import base64
import http.server
import json
import os
import secrets
import sys

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"


class State:
    layout = ""
    repository = ""
    user = None
    reject = False
    tokens = set()


def read_layout():
    with open(os.path.join(State.layout, "index.json")) as f:
        return json.load(f)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("tokenregistry: " + fmt % args + "\n")

    def send(self, code, body=b"", headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, code, err, message, headers=None):
        body = json.dumps({"errors": [{"code": err, "message": message}]}).encode()
        self.send(code, body, dict({"Content-Type": "application/json"}, **(headers or {})))

    def challenge(self):
        host = self.headers.get("Host", "127.0.0.1")
        realm = f'Bearer realm="http://{host}/token",service="tokenregistry"'
        self.error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": realm})

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/token":
            return self.token()
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token not in State.tokens or State.reject:
            return self.challenge()
        if path == "/v2/":
            return self.send(200, b"{}", {"Content-Type": "application/json"})
        prefix = f"/v2/{State.repository}/"
        if not path.startswith(prefix):
            return self.error(404, "NAME_UNKNOWN", "repository name not known to registry")
        kind, _, ref = path[len(prefix):].partition("/")
        if kind == "manifests":
            return self.manifest(ref)
        if kind == "blobs":
            return self.blob(ref, "application/octet-stream")
        self.error(404, "NOT_FOUND", "not found")

    def token(self):
        if State.user is not None:
            auth = self.headers.get("Authorization", "")
            given = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else None
            if given != State.user:
                return self.send(401, b'{"details":"incorrect username or password"}')
        token = secrets.token_hex(16)
        State.tokens.add(token)
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        self.send(200, body, {"Content-Type": "application/json"})

    def manifest(self, ref):
        if not ref.startswith("sha256:"):
            for m in read_layout()["manifests"]:
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
                    ref = m["digest"]
                    break
            else:
                return self.error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        path = os.path.join(State.layout, "blobs", "sha256", ref[7:])
        if not os.path.isfile(path):
            return self.error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        with open(path, "rb") as f:
            body = f.read()
        media = json.loads(body).get("mediaType", MEDIA_INDEX)
        self.send(200, body, {"Content-Type": media, "Docker-Content-Digest": ref})

    def blob(self, digest, media):
        path = os.path.join(State.layout, "blobs", "sha256", digest.removeprefix("sha256:"))
        if not digest.startswith("sha256:") or not os.path.isfile(path):
            return self.error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        with open(path, "rb") as f:
            body = f.read()
        self.send(200, body, {"Content-Type": media, "Docker-Content-Digest": digest})


def main(argv):
    if len(argv) < 4:
        sys.exit(__doc__)
    State.layout, State.repository, portfile = argv[1], argv[2], argv[3]
    rest = argv[4:]
    if "--user" in rest:
        State.user = rest[rest.index("--user") + 1]
    State.reject = "--reject-tokens" in rest
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, portfile)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
