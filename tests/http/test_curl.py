"""The real ``curl`` binary against a real ``avp-serve``: every conformance vector a receiver can
grade is posted over HTTP/1.1 and over HTTP/2 with prior knowledge, and each class of refusal
comes back with its status and problem JSON (R-H5.1, R-H5.2). One curl process per batch
(``--next``), so hundreds of transfers cost one process start."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import avp_http
import pytest
from httpkit import hello, kv
from receivers import OTHER_MODEL

import avp_codec as avp

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "conformance" / "vectors"
CURL = shutil.which("curl")
pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(CURL is None, reason="curl is not installed")]
# The codec's default limits: vectors are graded with them unless their context says otherwise.
DEFAULT_LIMIT_ARGS = ["--max-message-bytes", str(1 << 40), "--max-tensor-bytes", str(1 << 34),
                      "--limit", f"max_buffer_bytes={256 << 20}"]
ONE = "%{http_code} %{content_type}\\n"


def _manifest() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / "manifest.json").read_text())["cases"]
    return cases


def _server_args(ctx: dict[str, Any], tmp: Path) -> list[str] | None:
    """avp-serve options that make a receiver grade a vector the way its context says; None
    for contexts a receiver never has (unverified decoding, a model identity to compare)."""
    if set(ctx) - {"keys", "require_auth", "limits"}:
        return None
    args = list(DEFAULT_LIMIT_ARGS)
    for name, value in ctx.get("limits", {}).items():
        args += ["--limit", f"{name}={value}"]
    for i, (key_id, key) in enumerate(ctx.get("keys", {}).items()):
        path = tmp / f"key{i}-{key_id}.bin"
        path.write_bytes(bytes.fromhex(key))
        args += ["--hmac-key", f"{bytes.fromhex(key_id).decode()}={path}"]
    if ctx.get("require_auth"):
        args.append("--require-auth")
    return args


def _incremental_verdict(case: dict[str, Any], path: Path) -> avp.ErrorCode:
    """The code a receiver must answer: the manifest's (graded against a complete-buffer
    decode), except where an incremental decoder legitimately refuses earlier with
    LIMIT_BUFFER (a structure larger than max_buffer_bytes, 11.2)."""
    want = avp.ErrorCode[case["expected"]["error_name"]]
    ctx = case["context"]
    values = {"max_message_bytes": 1 << 40, "max_tensor_bytes": 1 << 34,
              "max_buffer_bytes": 256 << 20, **ctx.get("limits", {})}
    keys = {bytes.fromhex(k): bytes.fromhex(v) for k, v in ctx.get("keys", {}).items()}
    dec = avp.Decoder(avp.Limits(**values), keys=keys, require_auth=ctx.get("require_auth", False))
    try:
        dec.feed(path.read_bytes())
        dec.end_of_input()
        while dec.next_event() is not avp.NEED_DATA:
            pass
    except avp.AvpError as e:
        if e.code != want:
            assert e.code == avp.ErrorCode.LIMIT_BUFFER, (case["id"], e.code, want)
        return e.code
    raise AssertionError(f"{case['id']}: the incremental decoder accepted an invalid vector")


def _curl_batch(transfers: list[list[str]], tmp: Path, *, http2: bool) -> list[str]:
    """Run the transfers in one curl; returns one "status content-type" line per transfer.

    curl 7.88 (this machine's) breaks a reused connection under --http2-prior-knowledge
    ("Error in the HTTP2 framing layer", curl issue 10634, fixed in 7.89): each HTTP/2 transfer
    therefore names its own host, mapped to the server with --connect-to, so none is reused."""
    cfg: list[str] = []
    for i, t in enumerate(transfers):
        if i:
            cfg.append("next")
        cfg += ["silent", "show-error", f'write-out = "{ONE}"', "max-time = 30", *t]
        if http2:
            cfg.append("http2-prior-knowledge")
            (url,) = [x for x in cfg[len(cfg) - len(t) - 1:] if x.startswith("url = ")]
            hostport = url.split("//", 1)[1].split("/", 1)[0]
            host = f"t{i}.avp.invalid:{hostport.rsplit(':', 1)[1]}"
            cfg[cfg.index(url, len(cfg) - len(t) - 2)] = url.replace(hostport, host)
            cfg.append(f'connect-to = "{host}:{hostport}"')
        else:
            cfg.append("http1.1")
    path = tmp / f"curl-{'h2' if http2 else 'h1'}.cfg"
    path.write_text("\n".join(cfg) + "\n")
    assert CURL is not None
    r = subprocess.run([CURL, "--config", str(path)], capture_output=True, text=True,
                       timeout=240, check=False)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == len(transfers), (r.returncode, r.stderr[-2000:], lines[-5:])
    return lines


def _post(url: str, file: Path, out: Path, *headers: str) -> list[str]:
    t = [f'url = "{url}"', f'data-binary = "@{file}"', 'header = "Content-Type: application/avp"',
         f'output = "{out}"']
    return t + [f'header = "{h}"' for h in headers]


def test_conformance_vectors_over_curl(serve: object, tmp_path: Path) -> None:
    """Every vector whose context a receiver can have, posted to the store resource (2.3) over
    HTTP/1.1 and over HTTP/2 with prior knowledge: valid ones are stored (201/200 + Location),
    invalid ones answer the status of their code with a problem naming it (R-H5.1, R-H5.2,
    R-H3.1: both versions conform); acceptable ones may go either way."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for case in _manifest():
        if case["result"] == "acceptable":
            continue
        key = json.dumps(case["context"], sort_keys=True)
        groups.setdefault(key, []).append(case)
    checked = 0
    for key, cases in groups.items():
        ctx = json.loads(key)
        args = _server_args(ctx, tmp_path)
        if args is None:
            continue
        if not ctx:  # the bulk of the suite: a real avp-serve process
            srv = serve(*args)  # type: ignore[operator]
            for http2 in (False, True):
                _grade(srv, cases, tmp_path / f"{checked}-{http2}", http2)
            srv.stop()
        else:  # a receiver configured as the context says, on a thread (no process start)
            with avp_http.BackgroundServer(avp_http.AvpApp(avp_http.Mailbox(),
                                                           _config(ctx))) as bg:
                for http2 in (False, True):
                    _grade(bg, cases, tmp_path / f"{checked}-{http2}", http2)
        checked += len(cases)
    assert checked >= 250, checked  # the suite's vectors minus the few no receiver grades


def _config(ctx: dict[str, Any]) -> avp_http.ServerConfig:
    values = {"max_message_bytes": 1 << 40, "max_tensor_bytes": 1 << 34,
              "max_buffer_bytes": 256 << 20, **ctx.get("limits", {})}
    return avp_http.ServerConfig(
        limits=avp.Limits(**values), require_auth=bool(ctx.get("require_auth")),
        keys={bytes.fromhex(k): bytes.fromhex(v) for k, v in ctx.get("keys", {}).items()})


def _grade(srv: Any, cases: list[dict[str, Any]], tmp: Path, http2: bool) -> None:
    tmp.mkdir()
    outs = [tmp / f"out-{i}" for i in range(len(cases))]
    lines = _curl_batch([_post(srv.url + "/messages", VECTORS / c["file"], o)
                         for c, o in zip(cases, outs, strict=True)], tmp, http2=http2)
    for case, line, out in zip(cases, lines, outs, strict=True):
        parts = line.split()
        status, ctype = int(parts[0]), parts[1] if len(parts) > 1 else ""
        if case["result"] == "valid":
            assert status in (200, 201), (case["id"], line, out.read_text()[:300])
            continue
        code = _incremental_verdict(case, VECTORS / case["file"])
        name = code.name
        assert status == avp_http.status_of(int(code)), (case["id"], line)
        assert ctype.startswith("application/problem+json"), (case["id"], line)
        body = json.loads(out.read_bytes())
        assert (body["code"], body["code_name"], body["status"]) == (int(code), name, status)
        assert body["type"].endswith(":" + name)


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "h2c"])
def test_each_class_of_refusal_over_curl(serve: object, tmp_path: Path, http2: bool) -> None:
    """400, 401, 403, 404, 409, 413, 415, 422 (and success) with curl, as README shows it: a
    handshake whose AVP-Session header curl saves, then deliveries in that session."""
    token_file = tmp_path / "tokens"
    token_file.write_text("curl-token\n")
    key = tmp_path / "k.bin"
    key.write_bytes(b"k" * 32)
    srv = serve("--app", "receivers:kv_mailbox", "--token-file", str(token_file),  # type: ignore[operator]
                "--hmac-key", f"k1={key}", "--max-message-bytes", "65536")
    files = {
        "hello": avp.encode(hello()),
        "kv": avp.encode(kv()),
        "other": avp.encode(kv(model_id=OTHER_MODEL)),
        "big": avp.encode(kv(tokens=4096)),
        "corrupt": bytes(b ^ (i == 100) for i, b in enumerate(avp.encode(kv()))),
        "forged": _forged(),
    }
    for name, data in files.items():
        (tmp_path / f"{name}.avp").write_bytes(data)
    auth = "Authorization: Bearer curl-token"
    headers = tmp_path / "hs.headers"
    # The handshake first (curl keeps the response headers in a file).
    hs = _post(srv.url + "/handshake", tmp_path / "hello.avp", tmp_path / "accept.avp", auth)
    (line,) = _curl_batch([hs + [f'dump-header = "{headers}"']], tmp_path, http2=http2)
    assert line.startswith("200 application/avp")
    session = next(h.split(":", 1)[1].strip() for h in headers.read_text().splitlines()
                   if h.lower().startswith("avp-session:"))
    accept = avp.decode((tmp_path / "accept.avp").read_bytes())
    assert avp.check_accept(avp.decode(files["hello"]), accept) == avp.Mode.KV_CACHE
    s = f"AVP-Session: {session}"
    d = srv.url + "/deliver"
    cases = [  # (transfer, status, code name or problem title)
        (_post(d, tmp_path / "kv.avp", tmp_path / "r0", auth, s), 200, None),
        (_post(d, tmp_path / "kv.avp", tmp_path / "r1", s), 401, "unauthorized"),
        (_post(d, tmp_path / "kv.avp", tmp_path / "r2", "Authorization: Bearer nope", s), 401,
         "unauthorized"),
        (_post(d, tmp_path / "corrupt.avp", tmp_path / "r3", auth, s), 400, "SECTION_CHECKSUM"),
        (_post(d, tmp_path / "forged.avp", tmp_path / "r4", auth, s), 403, "AUTH_FAILED"),
        ([f'url = "{srv.url}/messages/{"0" * 64}"', f'output = "{tmp_path / "r5"}"',
          f'header = "{auth}"'], 404, "not-found"),
        (_post(d, tmp_path / "kv.avp", tmp_path / "r6", auth, "AVP-Session: " + "x" * 24), 409,
         "session-unknown"),
        (_post(d, tmp_path / "big.avp", tmp_path / "r7", auth, s), 413, "LIMIT_MESSAGE"),
        (_post(d, tmp_path / "kv.avp", tmp_path / "r8", auth, s,
               "Content-Type: application/avp; version=2.0"), 415, "unsupported-media-type"),
        (_post(d, tmp_path / "other.avp", tmp_path / "r9", auth, s), 422, "MODEL_MISMATCH"),
    ]
    lines = _curl_batch([c[0] for c in cases], tmp_path, http2=http2)
    for i, ((_, status, title), line) in enumerate(zip(cases, lines, strict=True)):
        assert int(line.split()[0]) == status, (i, line)
        body = (tmp_path / f"r{i}").read_bytes()
        if title is None:
            assert json.loads(body)["kind"] == "KV_CACHE"
            continue
        assert line.split()[1].startswith("application/problem+json"), line
        assert json.loads(body)["title"] == title
    assert srv.alive()


def _forged() -> bytes:
    """A message authenticated with key k1, one tensor byte changed and every CRC fixed: only
    the HMAC can tell (R-H6.2)."""
    msg = kv(seed=5)
    good = bytearray(avp.encode(msg, auth_key=(b"k1", b"k" * 32)))
    back = avp.decode(bytes(good))
    arr = back.tensors[0].array().copy()
    arr.flat[0] += 1
    forged = avp.Message(back.kind, back.entries, back.layers,
                         [avp.Tensor.from_array(arr, avp.Role.KEY, layer=0,
                                                layout=avp.Layout.BHTD), *back.tensors[1:]],
                         auth_tag=back.auth_tag)
    return avp.encode(forged)  # re-encoded with the old tag: CRCs right, tag wrong


def test_readme_curl_lines(serve: object, tmp_path: Path) -> None:
    """The curl block of README.md, run as written against a real server (its port swapped
    in): the store, the handshake, a delivery in the session and a refusal all behave as the
    README says."""
    import os
    import re
    import sys

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## AVP over HTTP", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [ln for ln in block.replace("\\\n", " ").splitlines()
             if ln.strip() and not ln.startswith("#") and not ln.startswith("avp-serve")]
    s = serve()  # type: ignore[operator]
    script = "\n".join(lines).replace("8080", str(s.port))
    script = re.sub(r"^python ", f"{sys.executable} ", script, flags=re.M)
    script = re.sub(r"^avp-dump ", f"{sys.executable} -m avp_tools.dump_cli ", script,
                    flags=re.M)
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, check=False,
                       env=os.environ | {"PATH": f"{Path(CURL or 'curl').parent}:/usr/bin:/bin"})
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    out = r.stdout
    assert "HTTP/1.1 201" in out and "location: /avp/v1/messages/" in out.lower()
    assert "kind ACCEPT" in out
    assert '"kind":"TEXT"' in out  # the Mailbox's answer to the delivery
    assert '"code_name":"TRUNCATED"' in out and '"status":400' in out
