"""A vLLM KV connector (KVConnectorBase_V1) that speaks AVP. Import it only inside vLLM's venv.

One line of configuration, the way vLLM users configure every connector:

    --kv-transfer-config '{"kv_connector": "AvpConnector",
        "kv_connector_module_path": "avp_engines.vllm_connector", "kv_role": "kv_both",
        "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"save_dir": "/srv/avp/out", "source": "/srv/avp/in"}}'

Producer (kv_producer / kv_both, ``save_dir``): when a request's prompt has been prefilled, the
prompt's KV is written as one AVP KV_CACHE message (MODEL_ID, CONTEXT_LENGTH, TOKEN_IDS,
POSITIONS, per layer KEY and VALUE in BHTD), streamed layer by layer as vLLM hands each
attention layer to save_kv_layer, and renamed into place when the step ends. The file is named by
a hash of the prompt's token ids; the request's output carries its path in
``kv_transfer_params["avp_message"]``.

Consumer (kv_consumer / kv_both, ``source``): a file, a directory of ``*.avp`` files, or
``"module:factory"`` for any other source (``avp_engines.sources:http_source`` asks an
``avp-serve`` receiver through the HTTP binding's prefix lookup). For each new request the
scheduler asks the source for the message sharing the longest prefix with the prompt, checks it
(this engine's MODEL_ID, its layer count, TOKEN_IDS present and equal over the prefix used) and
offers the whole blocks of that prefix as external hits, leaving at least the prompt's last token
for vLLM to compute. A message that fails a check is refused with a logged AvpError and the
request is computed normally. The worker decodes the message (CRC-checked), checks heads and
head_dim, and writes K and V into the request's blocks through the block interior probed from the
CPU backend's own cache-write kernel (_paged); a message that fails there is reported through
``get_block_ids_with_load_errors``, vLLM's load-error path: with ``kv_load_failure_policy``
"recompute" those blocks are recomputed, with "fail" the request ends with an error; the engine
keeps serving either way.

Other extra config: ``journal`` (a file that gets one JSON line per save, load, refusal and
load error, for tests and demos), ``model_id`` (64 hex digits; default: computed from the model
directory, identity.model_id_of), ``source_args`` (a dict for a factory source), ``save_dtype``
(float32, float16 or bfloat16; default the cache's dtype), ``codec`` (raw, zstd,
byteplane_zstd).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.logger import init_logger

import avp_codec as avp
from avp_codec import AvpError, ErrorCode

from . import _kv, _paged, identity, sources

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

logger = init_logger(__name__)
PRODUCER = "avp-engines/0.1.0 (vLLM connector)"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadSpec:
    req_id: str
    key: str  # the source's key (a file path)
    block_ids: list[int]
    start: int  # first token to load (tokens before it were computed locally)
    stop: int


@dataclass
class SaveSpec:
    req_id: str
    path: str
    token_ids: list[int]
    block_ids: list[int]


@dataclass
class AvpConnectorMetadata(KVConnectorMetadata):
    loads: list[LoadSpec] = field(default_factory=list)
    saves: list[SaveSpec] = field(default_factory=list)


@dataclass
class _Tracked:
    prompt: list[int]
    block_ids: list[int]


@dataclass
class _Writer:
    spec: SaveSpec
    tmp: Path
    file: Any
    enc: avp.StreamEncoder
    next_layer: int = 0
    failed: str | None = None


def message_path(save_dir: str, token_ids: list[int]) -> str:
    digest = hashlib.sha256(np.asarray(token_ids, "<i8").tobytes()).hexdigest()[:32]
    return os.path.join(save_dir, f"{digest}.avp")


class AvpConnector(KVConnectorBase_V1):
    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole,
                 kv_cache_config: KVCacheConfig | None = None) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        cfg = self._kv_transfer_config
        extra = dict(cfg.kv_connector_extra_config or {})
        mc = vllm_config.model_config
        self._block_size = int(vllm_config.cache_config.block_size)
        self._n_layers = int(mc.get_num_layers(vllm_config.parallel_config))
        self._heads = int(mc.get_num_kv_heads(vllm_config.parallel_config))
        self._head_dim = int(mc.get_head_size())
        self._save_dir = extra.get("save_dir") if cfg.is_kv_producer else None
        self._save_dtype = _DTYPES.get(str(extra.get("save_dtype", "")))
        self._codec = avp.Codec[str(extra.get("codec", "raw")).upper()]
        mid_text = extra.get("model_id")
        self._model_id = (identity.parse_model_id(str(mid_text)) if mid_text
                          else identity.model_id_of(mc.model, str(mc.dtype).removeprefix("torch.")))
        self._model_name = str(mc.served_model_name or mc.model)
        self._journal = str(extra["journal"]) if extra.get("journal") else None
        self._source: sources.MessageSource | None = None
        if cfg.is_kv_consumer and extra.get("source"):
            self._source = sources.make_source(str(extra["source"]), extra.get("source_args"),
                                               engine_model_id=self._model_id)
        if self._save_dir:
            os.makedirs(self._save_dir, exist_ok=True)
        # scheduler side
        self._pending: dict[str, tuple[sources.Candidate, int, int]] = {}
        self._tracked: dict[str, _Tracked] = {}
        self.refusals: list[str] = []
        # worker side
        self._caches: dict[str, torch.Tensor] = {}
        self._ordinal: dict[str, int] = {}
        self._layout: _paged.PagedLayout | None = None
        self._writers: dict[str, _Writer] = {}
        self._failed_blocks: set[int] = set()
        self._failed_reqs: set[str] = set()  # load failed this step: their KV is not valid
        logger.info("AVP connector (%s): model %s..., %d layers x %d heads x %d, save_dir=%s, "
                    "source=%s", role.name, self._model_id.hex()[:16], self._n_layers,
                    self._heads, self._head_dim, self._save_dir, extra.get("source"))

    # ------------------------------------------------------------ scheduler side

    def _note(self, event: str, req_id: str, **fields: Any) -> None:
        if self._journal is None:
            return
        line = json.dumps({"event": event, "request": req_id, "pid": os.getpid(), **fields})
        with open(self._journal, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def _refuse(self, req_id: str, err: AvpError) -> None:
        self.refusals.append(f"{req_id}: {err}")
        logger.warning("AVP connector refused a message for request %s: %s", req_id, err)
        self._note("refused", req_id, code=err.code.name, reason=str(err))

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int
                                   ) -> tuple[int | None, bool]:
        if self._source is None:
            return 0, False
        prompt = list(request.prompt_token_ids or [])
        try:
            cand = self._source.lookup(prompt)
        except (AvpError, OSError) as e:
            err = e if isinstance(e, AvpError) else AvpError(ErrorCode.TRUNCATED, str(e))
            self._refuse(request.request_id, err)
            return 0, False
        if cand is None:
            return 0, False
        if cand.model_id != self._model_id:
            self._refuse(request.request_id, AvpError(
                ErrorCode.MODEL_MISMATCH, f"message {cand.key} is for model "
                f"{cand.model_id.hex()[:16]}..., this engine serves "
                f"{self._model_id.hex()[:16]}...", path="entries.MODEL_ID"))
            return 0, False
        if cand.n_layers != self._n_layers:
            self._refuse(request.request_id, AvpError(
                ErrorCode.KIND_CONSTRAINT, f"message {cand.key} has {cand.n_layers} layers, the "
                f"model {self._n_layers}", path="layers"))
            return 0, False
        usable = min(cand.matched, cand.context_length, len(prompt) - 1)
        hit = usable // self._block_size * self._block_size
        if hit <= num_computed_tokens:
            if cand.matched < self._block_size:
                self._refuse(request.request_id, AvpError(
                    ErrorCode.KIND_CONSTRAINT, f"message {cand.key} shares {cand.matched} "
                    f"leading tokens with the prompt, less than one block of "
                    f"{self._block_size}", path="TOKEN_IDS"))
            return 0, False
        self._pending[request.request_id] = (cand, num_computed_tokens, hit)
        self._note("matched", request.request_id, key=cand.key, matched=cand.matched,
                   start=num_computed_tokens, stop=hit)
        return hit - num_computed_tokens, False

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks,
                                 num_external_tokens: int) -> None:
        if num_external_tokens <= 0:
            self._pending.pop(request.request_id, None)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = AvpConnectorMetadata()
        for new in scheduler_output.scheduled_new_reqs:
            blocks = list(new.block_ids[0])
            pend = self._pending.pop(new.req_id, None)
            if pend is not None:
                cand, start, stop = pend
                meta.loads.append(LoadSpec(new.req_id, cand.key, blocks, start, stop))
            if self._save_dir and new.prompt_token_ids:
                t = _Tracked(list(new.prompt_token_ids), blocks)
                self._tracked[new.req_id] = t
                self._maybe_save(meta, new.req_id, t, new.num_computed_tokens,
                                 scheduler_output.num_scheduled_tokens.get(new.req_id, 0))
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            tracked = self._tracked.get(req_id)
            if tracked is None:
                continue
            t = tracked
            new_ids = cached.new_block_ids[i]
            if new_ids is not None:
                if req_id in cached.resumed_req_ids:
                    t.block_ids = list(new_ids[0])
                else:
                    t.block_ids.extend(new_ids[0])
            self._maybe_save(meta, req_id, t, cached.num_computed_tokens[i],
                             scheduler_output.num_scheduled_tokens.get(req_id, 0))
        for req_id in scheduler_output.finished_req_ids:
            self._tracked.pop(req_id, None)
        return meta

    def _maybe_save(self, meta: AvpConnectorMetadata, req_id: str, t: _Tracked, computed: int,
                    scheduled: int) -> None:
        """Save in the step that computes the prompt's last token. A request whose load failed
        and is recomputed (kv_load_failure_policy "recompute") passes here again, so it is
        tracked until it finishes, not until its first save."""
        if computed < len(t.prompt) <= computed + scheduled:
            assert self._save_dir is not None
            path = message_path(self._save_dir, t.prompt)
            meta.saves.append(SaveSpec(req_id, path, t.prompt, list(t.block_ids)))

    def request_finished(self, request: Request, block_ids: list[int]
                         ) -> tuple[bool, dict[str, Any] | None]:
        self._tracked.pop(request.request_id, None)
        self._pending.pop(request.request_id, None)
        if self._save_dir and request.prompt_token_ids:
            path = message_path(self._save_dir, list(request.prompt_token_ids))
            if os.path.exists(path):
                return False, {"avp_message": path}
        return False, None

    # ------------------------------------------------------------ worker side

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        from vllm.model_executor.models.utils import extract_layer_index

        self._caches = dict(kv_caches)
        by_index = sorted(kv_caches, key=extract_layer_index)
        self._ordinal = {name: i for i, name in enumerate(by_index)}
        first = kv_caches[by_index[0]]
        if first.dim() != 4 or first.shape[3] != 2 * self._head_dim:
            raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                           f"KV layer of shape {tuple(first.shape)}: the AVP connector maps the "
                           "CPU attention backend's [blocks, heads, block_size, 2 x head_dim]")
        self._layout = self._probe(first)
        logger.info("AVP connector: %d KV layers, block interior probed (%s)", len(kv_caches),
                    self._layout.name)

    def _probe(self, layer: torch.Tensor) -> _paged.PagedLayout:
        from vllm import _custom_ops as ops
        from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

        cache_dtype = str(self._vllm_config.cache_config.cache_dtype)
        if cache_dtype != "auto":
            raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                           f"kv_cache_dtype {cache_dtype}: the connector maps unquantized caches")
        isa = _get_attn_isa(layer.dtype, int(layer.shape[2]), self._head_dim, cache_dtype)

        def write(k: torch.Tensor, v: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor,
                  slots: torch.Tensor) -> None:
            ops.cpu_attn_reshape_and_cache(k, v, kc, vc, slots, isa)

        lay = _paged.probe(write, int(layer.shape[2]), self._head_dim, layer.dtype)
        return _paged.PagedLayout(lay.block_size, lay.head_dim, lay.k_index, lay.v_index,
                                  f"isa {isa}")

    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, AvpConnectorMetadata)
        for spec in meta.loads:
            try:
                self._load(spec)
            except (AvpError, OSError, ValueError) as e:
                bs = self._block_size
                bad = spec.block_ids[spec.start // bs:(spec.stop + bs - 1) // bs]
                self._failed_blocks.update(bad)
                self._failed_reqs.add(spec.req_id)
                code = e.code.name if isinstance(e, AvpError) else type(e).__name__
                self._note("load_error", spec.req_id, key=spec.key, code=code, reason=str(e),
                           blocks=len(bad))
                logger.error("AVP connector could not load %s for request %s (%d blocks "
                             "reported to vLLM's load-error path): %s", spec.key, spec.req_id,
                             len(bad), e)

    def _load(self, spec: LoadSpec) -> None:
        assert self._layout is not None
        msg = sources.load_key(self._source, spec.key)  # a file, or a URL (HTTP source)
        kv = _kv.view(msg, model_id=self._model_id, n_layers=self._n_layers)
        if kv.token_ids is None or kv.context_length < spec.stop:
            raise AvpError(ErrorCode.KIND_CONSTRAINT, "the message no longer holds the tokens "
                           "the scheduler matched", path="TOKEN_IDS")
        names = sorted(self._ordinal, key=self._ordinal.__getitem__)
        sides = []
        for li, _name in enumerate(names):
            k = kv.array(li, avp.Role.KEY)
            v = kv.array(li, avp.Role.VALUE)
            if k.shape[0] != self._heads or k.shape[2] != self._head_dim or v.shape != k.shape:
                raise AvpError(ErrorCode.UNSUPPORTED_CAPABILITY,
                               f"layer {li}: K {k.shape} / V {v.shape}, the engine holds "
                               f"{self._heads} heads of {self._head_dim}", path=f"layers[{li}]")
            sides.append((k[:, spec.start:spec.stop], v[:, spec.start:spec.stop]))
        for name, (k, v) in zip(names, sides, strict=True):  # all checked before any write
            _paged.scatter(self._caches[name], self._layout, spec.block_ids, spec.start,
                           torch.from_numpy(np.ascontiguousarray(k, np.float32)),
                           torch.from_numpy(np.ascontiguousarray(v, np.float32)))
        logger.info("AVP connector loaded tokens [%d, %d) of %s for request %s", spec.start,
                    spec.stop, spec.key, spec.req_id)
        self._note("loaded", spec.req_id, key=spec.key, start=spec.start, stop=spec.stop)

    def get_block_ids_with_load_errors(self) -> set[int]:
        out, self._failed_blocks = self._failed_blocks, set()
        return out

    def wait_for_layer_load(self, layer_name: str) -> None:
        return

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any,
                      **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, AvpConnectorMetadata)
        if not meta.saves or self._layout is None:
            return
        li = self._ordinal.get(layer_name)
        if li is None:
            return
        for spec in meta.saves:
            if spec.req_id in self._failed_reqs:
                continue  # recomputed (and saved) in a later step, or failed
            w = self._writers.get(spec.req_id)
            if w is None:
                w = self._open(spec)
                self._writers[spec.req_id] = w
            if w.failed is not None:
                continue
            if li != w.next_layer:
                w.failed = f"layer {li} arrived when layer {w.next_layer} was expected"
                continue
            try:
                k, v = _paged.gather(kv_layer, self._layout, spec.block_ids, 0,
                                     len(spec.token_ids))
                if self._save_dtype is not None:
                    k, v = k.to(self._save_dtype), v.to(self._save_dtype)
                for role, x in ((avp.Role.KEY, k), (avp.Role.VALUE, v)):
                    w.enc.write_tensor(avp.Tensor.from_array(
                        x.unsqueeze(0).contiguous(), role, layer=li, layout=avp.Layout.BHTD,
                        codec=self._codec))
                w.next_layer += 1
            except (AvpError, OSError) as e:
                w.failed = str(e)

    def _open(self, spec: SaveSpec) -> _Writer:
        n = len(spec.token_ids)
        final = Path(spec.path)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        f = open(tmp, "wb")  # noqa: SIM115 - closed in wait_for_save
        entries = [avp.Entry.of(avp.MetaKey.MODEL_ID, self._model_id),
                   avp.Entry.of(avp.MetaKey.MODEL_NAME, self._model_name),
                   avp.Entry.of(avp.MetaKey.PRODUCER, PRODUCER),
                   avp.Entry.of(avp.MetaKey.CONTEXT_LENGTH, n)]
        layers = [avp.Layer(i, avp.LayerKind.FULL_ATTENTION, 0, n) for i in range(self._n_layers)]
        enc = avp.StreamEncoder(f, avp.Kind.KV_CACHE, entries, layers, 2 + 2 * self._n_layers)
        ids = np.asarray(spec.token_ids, np.int64).reshape(1, n)
        enc.write_tensor(avp.Tensor.from_array(ids, avp.Role.TOKEN_IDS, layout=avp.Layout.BT))
        enc.write_tensor(avp.Tensor.from_array(np.arange(n, dtype=np.int64).reshape(1, n),
                                               avp.Role.POSITIONS, layout=avp.Layout.BT))
        return _Writer(spec, tmp, f, enc)

    def wait_for_save(self) -> None:
        self._failed_reqs.clear()
        for req_id, w in list(self._writers.items()):
            # Called once per step after every forward of the step: a writer still short of
            # layers will not get them (its save spec was this step's only one).
            if w.failed is None and w.next_layer < self._n_layers:
                w.failed = f"only {w.next_layer} of {self._n_layers} layers were handed over"
            del self._writers[req_id]
            try:
                if w.failed is None:
                    w.enc.finish()
                w.file.close()
                if w.failed is None:
                    os.replace(w.tmp, w.spec.path)
                    self._note("saved", req_id, path=w.spec.path, tokens=len(w.spec.token_ids),
                               bytes=os.path.getsize(w.spec.path))
                    logger.info("AVP connector saved %d tokens of request %s to %s",
                                len(w.spec.token_ids), req_id, w.spec.path)
                    continue
            except (AvpError, OSError) as e:
                w.failed = str(e)
            w.tmp.unlink(missing_ok=True)
            self._note("save_error", req_id, reason=w.failed)
            logger.error("AVP connector did not save request %s: %s", req_id, w.failed)
