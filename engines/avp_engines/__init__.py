"""avp_engines: AVP where the KV-caches live.

* `avp_engines.llama`: llama.cpp sequence state <-> AVP KV_CACHE (pure Python).
* `avp_engines.lmcache`: LMCache's v1 KV transfer protocol <-> AVP KV_CACHE.
* `avp_engines.vllm_connector`: a vLLM KV connector (KVConnectorBase_V1) that writes finished
  requests' KV as AVP messages and loads AVP messages as external prefix hits (imports vLLM; use
  it inside vLLM's venv).
* `avp_engines.sources`: where a consumer finds messages (a file, a directory, an HTTP peer).

Each converter is a hostile edge: malformed input raises `avp_codec.AvpError` with a stable code.
"""

from __future__ import annotations

__all__ = ["llama", "lmcache", "sources"]
