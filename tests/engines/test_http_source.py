"""The vLLM connector's HTTP source: a consumer finds and loads a KV_CACHE that an avp-serve
receiver stores, through the binding's prefix lookup (spec/avp-http.md 2.3, 2.4). The server
is the real avp_http app on hypercorn (on a thread of this process); the message is the recorded
vLLM-connector fixture (16 tokens of SmolLM2-135M)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import avp_http
import numpy as np
import pytest
from avp_engines import sources
from avp_engines.http_source import HttpSource

import avp_codec as avp

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "smollm2_vllm16.avp"
DATA = FIXTURE.read_bytes()
MSG = avp.decode(DATA)
MID = next(e.value for e in MSG.entries if e.key == avp.MetaKey.MODEL_ID)
IDS = next(t for t in MSG.tensors if t.role == avp.Role.TOKEN_IDS).array().reshape(-1).tolist()
TOKEN = "engine-secret"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[avp_http.BackgroundServer]:
    app = avp_http.AvpApp(avp_http.Mailbox(model_id=MID), avp_http.ServerConfig(tokens=[TOKEN]))
    with avp_http.BackgroundServer(app) as srv:
        with avp_http.AvpClient(srv.url, token=TOKEN) as c:
            c.store(DATA)
            # A second, shorter message of the same model: its 4 tokens are a prefix too.
            k = [np.zeros((1, 1, 4, 4), np.float32)] * len(MSG.layers)
            c.store(avp.kv_cache_from_arrays(MID, k, k, token_ids=np.array([IDS[:4]])))
        yield srv


def _src(srv: avp_http.BackgroundServer, **kw: object) -> HttpSource:
    return HttpSource(srv.url, model_id=MID, token=TOKEN, **kw)  # type: ignore[arg-type]


def test_lookup_finds_the_stored_prefix_and_load_checks_it(server: avp_http.BackgroundServer
                                                            ) -> None:
    with _src(server) as src:
        # The prompt extends the stored 16 tokens by 5: the tail probes reach 16.
        cand = src.lookup(IDS + [5, 6, 7, 8, 9])
        assert cand is not None
        digest = hashlib.sha256(DATA).hexdigest()
        assert cand.key == f"{server.url}/messages/{digest}"
        assert (cand.model_id, cand.matched, cand.context_length, cand.n_layers) == (
            MID, 16, 16, 30)
        got = src.load(cand)
        assert avp.encode(got) == DATA  # the recorded message, byte for byte
        # The worker sees only the key: it loads through the source (a URL, not a file).
        assert avp.encode(sources.load_key(src, cand.key)) == DATA


def test_block_multiples_reach_further_back(server: avp_http.BackgroundServer) -> None:
    prompt = IDS + list(range(100, 140))  # 56 tokens: 16 is beyond the tail, a block multiple
    with _src(server, tail=2, block_size=16) as src:
        assert src.lengths(56) == [56, 55, 54, 48, 32, 16]
        cand = src.lookup(prompt)
        assert cand is not None and cand.matched == 16
    with _src(server, tail=2, block_size=16, max_probes=4) as src:
        assert src.lookup(prompt) is None  # 16 is the 6th length: beyond the probe budget
    with _src(server, tail=0, block_size=4) as src:  # only the 4-token message is aligned
        cand = src.lookup(IDS[:6] + [1, 2])
        assert cand is not None and cand.matched == 4 and cand.n_layers == 30


def test_misses_and_refusals(server: avp_http.BackgroundServer) -> None:
    with HttpSource(server.url, model_id=bytes(32), token=TOKEN) as other:
        assert other.lookup(IDS + [1]) is None  # another model's prefixes are not offered
    with _src(server) as src:
        assert src.lookup([7] + IDS[1:]) is None  # first token differs: no prefix matches
        assert src.lookup([]) is None
        assert src.lookup([-1] + IDS) is None  # a latent position has no prefix digest (2.4)
        with pytest.raises(avp.AvpError, match="404"):  # evicted, or never stored
            src.load_key(f"{server.url}/messages/{'0' * 64}")
        with pytest.raises(avp.AvpError, match="digest"):  # bytes that do not hash to the name
            src.load_key(f"{server.url}/prefixes/{MID.hex()}/"
                         + hashlib.sha256(np.array(IDS, "<u4").tobytes()).hexdigest())
    with HttpSource(server.url, model_id=MID, token="wrong") as bad, \
            pytest.raises(avp.AvpError, match="401"):
        bad.lookup(IDS)  # reported (the connector logs it), not taken for a miss
    with pytest.raises(avp.AvpError):
        HttpSource(server.url, token=TOKEN)  # no model id: nothing to look up by
    with HttpSource("http://127.0.0.1:9/avp/v1", model_id=MID, timeout=2) as gone, \
            pytest.raises(avp.AvpError, match="lookup"):
        gone.lookup(IDS)  # nobody listens: an AvpError the connector logs


def test_connector_configuration_builds_it(server: avp_http.BackgroundServer) -> None:
    src = sources.make_source("avp_engines.sources:http_source",
                              {"url": server.url, "token": TOKEN}, engine_model_id=MID)
    assert isinstance(src, HttpSource) and src.model_id == MID
    cand = src.lookup(IDS)
    assert cand is not None and cand.matched == 16
    src.close()
    # A hex model id in the configuration wins over the engine's.
    src = sources.make_source("avp_engines.sources:http_source",
                              {"url": server.url, "token": TOKEN, "model_id": "00" * 32},
                              engine_model_id=MID)
    assert isinstance(src, HttpSource) and src.model_id == bytes(32)
    src.close()
    # A file source is unchanged: it loads by path, with or without load_key.
    assert avp.encode(sources.load_key(None, str(FIXTURE))) == DATA
    assert avp.encode(sources.load_key(sources.FileSource(FIXTURE), str(FIXTURE))) == DATA
