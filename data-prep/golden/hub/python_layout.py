"""What the Python `huggingface_hub` writes into its cache, for umt-hub's compatibility test.

Run from the repository root (needs `pip install huggingface_hub`; not run by CI):

    /work/pyenv/bin/python data-prep/golden/hub/python_layout.py

It starts a fake hub on 127.0.0.1 answering like huggingface.co (the same repo, commit and file
contents as crates/umt-hub/tests/fake_hub.rs: a `HEAD .../resolve/...` with `X-Repo-Commit`,
`X-Linked-Etag`, `X-Linked-Size` and a 302 to `/cdn/<sha256>` for LFS files, `ETag` = git blob
SHA-1 for regular files), lets `hf_hub_download` fetch three files into an empty cache, and writes
``python_layout.json`` next to this script: every entry under ``models--umt-rs--teachers`` with
its symlink target. ``fake_hub.rs`` asserts that umt-hub produces exactly this tree.

The other direction, Python reading a cache umt-hub filled, is checked by hand:

    /work/pyenv/bin/python data-prep/golden/hub/python_layout.py --serve 8765 &
    HF_ENDPOINT=http://127.0.0.1:8765 HF_HUB_CACHE=/tmp/umt-cache cargo xtask pull-teachers --repo umt-rs/teachers
    /work/pyenv/bin/python data-prep/golden/hub/python_layout.py --read-cache /tmp/umt-cache
"""

import argparse
import hashlib
import http.server
import json
import os
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = "umt-rs/teachers"
COMMIT = "4f2a0b1c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f40"
FILES = {
    # path: (bytes, stored with LFS)
    "audio.safetensors": (bytes((i * 7 + 3) % 256 for i in range(3000)), True),
    "sub/visual.safetensors": (bytes([9] * 1500), True),
    "config.json": (b'{"architecture": "resnet18"}', False),
    "train.log": (b"log", False),
}


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, headers, body=b""):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def route(self):
        if self.path.startswith("/cdn/"):
            for data, _ in FILES.values():
                if hashlib.sha256(data).hexdigest() == self.path[5:]:
                    return self.reply(200, {}, data)
            return self.reply(404, {})
        if self.path.startswith(f"/api/models/{REPO}/revision/"):
            if self.path.rsplit("/", 1)[1] not in ("main", COMMIT):
                return self.reply(404, {"X-Error-Code": "RevisionNotFound"})
            body = json.dumps({"id": REPO, "sha": COMMIT,
                               "siblings": [{"rfilename": p} for p in FILES]}).encode()
            return self.reply(200, {"Content-Type": "application/json"}, body)
        prefix = f"/{REPO}/resolve/"
        if not self.path.startswith(prefix):
            return self.reply(404, {"X-Error-Code": "RepoNotFound"})
        revision, _, path = self.path[len(prefix):].partition("/")
        if revision not in ("main", COMMIT):
            return self.reply(404, {"X-Error-Code": "RevisionNotFound"})
        if path not in FILES:
            return self.reply(404, {"X-Error-Code": "EntryNotFound"})
        data, lfs = FILES[path]
        if lfs:
            sha = hashlib.sha256(data).hexdigest()
            # The CDN is another host (here: port); huggingface_hub follows same-host redirects.
            return self.reply(302, {"X-Repo-Commit": COMMIT, "Location": f"{CDN[0]}/cdn/{sha}",
                                    "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                                    "ETag": '"0000000000000000000000000000000000000000"'})
        return self.reply(200, {"X-Repo-Commit": COMMIT, "ETag": f'"{git_sha1(data)}"'}, data)

    do_GET = route
    do_HEAD = route


CDN = []


def serve(port):
    """The hub on `port` (0: any) and its CDN on another port."""
    servers = []
    for p in (0, port):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", p), FakeHub)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    CDN.append(f"http://127.0.0.1:{servers[0].server_address[1]}")
    return servers[1]


def tree(repo_dir):
    out = {}
    for root, dirs, files in os.walk(repo_dir):
        for name in dirs + files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, repo_dir)
            out[rel] = os.readlink(full) if os.path.islink(full) else ("dir" if os.path.isdir(full) else "file")
    return dict(sorted(out.items()))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--serve", type=int, help="only run the fake hub on this port")
    p.add_argument("--read-cache", help="check that huggingface_hub reads this cache offline")
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        threading.Event().wait()
    import huggingface_hub
    from huggingface_hub import hf_hub_download, scan_cache_dir
    if args.read_cache:
        for path, (data, _) in FILES.items():
            if path.endswith(".safetensors") or path == "config.json":
                local = hf_hub_download(REPO, path, cache_dir=args.read_cache, local_files_only=True)
                assert open(local, "rb").read() == data, path
                print(f"python reads {path} from {local}")
        info = scan_cache_dir(args.read_cache)
        print(f"scan_cache_dir: {[(r.repo_id, r.size_on_disk, len(r.revisions)) for r in info.repos]}")
        if info.warnings:
            sys.exit(f"scan_cache_dir warnings: {info.warnings}")
        return
    server = serve(0)
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    with tempfile.TemporaryDirectory() as cache:
        for path in ["audio.safetensors", "sub/visual.safetensors", "config.json"]:
            hf_hub_download(REPO, path, cache_dir=cache, endpoint=endpoint)
        layout = tree(os.path.join(cache, "models--umt-rs--teachers"))
    layout = {k: v for k, v in layout.items() if not k.startswith(".no_exist")}
    out = {"huggingface_hub": huggingface_hub.__version__, "repo": REPO, "commit": COMMIT,
           "script": "data-prep/golden/hub/python_layout.py", "tree": layout,
           "refs/main": COMMIT}
    with open(os.path.join(HERE, "python_layout.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(json.dumps(out, indent=1))
    server.shutdown()


if __name__ == "__main__":
    main()
