"""What the A2A extension and the MCP binding share: identifiers, the declared parameters and
the problems (spec/avp-a2a.md sections 1, 2, 7; spec/avp-mcp.md sections 1, 5).

Pure functions over strings, JSON values and codec types; no SDK is imported here, so both
bindings (and their clients) read and write the same shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import avp_codec as avp

A2A_PREFIX = "https://agent-vector-protocol.org/ext/a2a/"
A2A_URI = A2A_PREFIX + "v1"  # R-A2A1.1: no comma (A2A-Extensions is comma-separated)
MCP_EXTENSION = "org.agent-vector-protocol/avp"  # SEP-2133 identifier (R-MCP1.1)
VERSION = "1.0"  # this implementation's version of both documents
MEDIA_TYPE = "application/avp"
FORMAT_VERSIONS = (f"{avp.FORMAT_MAJOR}.{avp.FORMAT_MINOR}",)
MAX_SAFE_INTEGER = (1 << 53) - 1  # params travel as protobuf Struct doubles (R-A2A2.2)

# Every problem slug either document defines (R-A2A7.1, R-MCP5.1).
PROBLEMS = frozenset({
    "avp-error", "bad-part", "session-unknown", "inline-too-large", "digest-mismatch",
    "reference-unreachable", "reference-refused", "decoded-too-large",
    "unsupported-extension-version", "request-too-large",
})

_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"(\d{1,4})\.(\d{1,4})")


def is_hex64(s: object) -> bool:
    return isinstance(s, str) and _HEX64.fullmatch(s) is not None


def is_avp_uri(uri: str) -> bool:
    """Any version of the A2A extension (R-A2A1.1's family)."""
    return uri.startswith(A2A_PREFIX)


def is_avp_media_type(value: str) -> bool:
    """``application/avp``, with or without parameters (R-H1.2's ``version``)."""
    return value.split(";", 1)[0].strip().lower() == MEDIA_TYPE


def major_of(version: object) -> int | None:
    """The major number of a ``"major.minor"`` string, or None when it is not one."""
    if not isinstance(version, str):
        return None
    m = _VERSION.fullmatch(version)
    return int(m.group(1)) if m else None


class AgentProblem(Exception):
    """A refusal of either binding: a problem slug plus, for AVP errors, the code, offset and
    path of the ``AvpError``. The A2A side renders it as an A2A error with ErrorInfo metadata
    (strings), the MCP side as a tool error's structured content (JSON values)."""

    def __init__(self, problem: str, detail: str, *, code: avp.ErrorCode | None = None,
                 offset: int | None = None, path: str = "", part: int | None = None,
                 maximum: int | None = None, supported: Sequence[str] = (),
                 extra: Mapping[str, Any] | None = None) -> None:
        assert problem in PROBLEMS, problem
        self.problem = problem
        self.detail = detail
        self.code = code
        self.offset = offset
        self.path = path
        self.part = part
        self.maximum = maximum
        self.supported = tuple(supported)
        self.extra = dict(extra or {})
        name = f" {code.name} [{int(code)}]" if code is not None else ""
        super().__init__(f"{problem}{name}: {detail}")

    @classmethod
    def from_avp(cls, e: avp.AvpError, *, part: int | None = None) -> AgentProblem:
        return cls("avp-error", e.detail, code=e.code, offset=e.offset, path=e.path, part=part)

    def as_json(self) -> dict[str, Any]:
        """The members of R-A2A7.1 / R-MCP5.1 with their natural JSON types."""
        out: dict[str, Any] = {"problem": self.problem}
        if self.code is not None:
            out |= {"avpCode": int(self.code), "avpCodeName": self.code.name, "path": self.path}
            if self.offset is not None:
                out["offset"] = self.offset
        if self.part is not None:
            out["part"] = self.part
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.supported:
            out["supported"] = " ".join(self.supported)
        return out | self.extra

    def as_strings(self) -> dict[str, str]:
        """The same as a map of strings (google.rpc.ErrorInfo.metadata)."""
        return {k: str(v) for k, v in self.as_json().items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], detail: str) -> AgentProblem | None:
        """Rebuild a problem a peer reported (strings or JSON values); None when ``data``
        names no problem of these documents."""
        problem = data.get("problem")
        if not isinstance(problem, str) or problem not in PROBLEMS:
            return None
        code: avp.ErrorCode | None = None
        raw = data.get("avpCode")
        try:
            code = avp.ErrorCode(int(str(raw))) if raw is not None else None
        except (TypeError, ValueError):
            code = None  # a code we do not know is a generic failure (17)
        offset = _int_or_none(data.get("offset"))
        supported = data.get("supported")
        return cls(problem, detail, code=code, offset=offset, path=str(data.get("path") or ""),
                   part=_int_or_none(data.get("part")), maximum=_int_or_none(data.get("maximum")),
                   supported=supported.split() if isinstance(supported, str) else ())


def _int_or_none(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.lstrip("-").isdigit():
        return int(v)
    return None


@dataclass(frozen=True)
class AvpParams:
    """The declaration of R-A2A2.1 (A2A card params) and R-MCP1.1 (MCP extension settings)."""

    max_message_bytes: int
    max_inline_bytes: int
    modes: tuple[avp.Mode, ...] = (avp.Mode.TEXT,)
    version: str = VERSION
    format_versions: tuple[str, ...] = FORMAT_VERSIONS
    media_type: str = MEDIA_TYPE
    model_id: bytes | None = None
    tokenizer_id: bytes | None = None
    model_name: str | None = None
    http_binding: str | None = None
    fetches_references: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version, "formatVersions": list(self.format_versions),
            "modes": [m.name for m in self.modes], "mediaType": self.media_type,
            "maxMessageBytes": self.max_message_bytes, "maxInlineBytes": self.max_inline_bytes,
            "fetchesReferences": self.fetches_references,
        }
        if self.model_id is not None:
            out["modelId"] = self.model_id.hex()
        if self.tokenizer_id is not None:
            out["tokenizerId"] = self.tokenizer_id.hex()
        if self.model_name is not None:
            out["modelName"] = self.model_name
        if self.http_binding is not None:
            out["httpBinding"] = self.http_binding
        return out

    @classmethod
    def from_json(cls, obj: object) -> AvpParams:
        """Strict reading (R-A2A2.2): any departure raises ``AvpError`` INVALID_VALUE, which a
        client takes as "no declaration" (the text fallback)."""
        if not isinstance(obj, Mapping):
            _bad("params is not an object")
        version = obj.get("version")
        if major_of(version) is None:
            _bad("version is not major.minor", "version")
        fv = obj.get("formatVersions")
        if not isinstance(fv, list) or not fv or any(major_of(v) is None for v in fv):
            _bad("formatVersions is not a list of major.minor", "formatVersions")
        modes_raw = obj.get("modes")
        if not isinstance(modes_raw, list) or not all(isinstance(m, str) for m in modes_raw):
            _bad("modes is not a list of mode names", "modes")
        try:
            modes = tuple(avp.Mode[m] for m in modes_raw)
        except KeyError:
            _bad("modes names an unknown mode", "modes")
        if avp.Mode.TEXT not in modes:
            _bad("modes lacks TEXT (R-14.3)", "modes")
        if obj.get("mediaType") != MEDIA_TYPE:
            _bad("mediaType is not application/avp", "mediaType")
        fetches = obj.get("fetchesReferences", False)
        if not isinstance(fetches, bool):
            _bad("fetchesReferences is not a boolean", "fetchesReferences")
        return cls(
            max_message_bytes=_integer(obj, "maxMessageBytes"),
            max_inline_bytes=_integer(obj, "maxInlineBytes"),
            modes=modes, version=str(version), format_versions=tuple(str(v) for v in fv),
            model_id=_hex_id(obj, "modelId"), tokenizer_id=_hex_id(obj, "tokenizerId"),
            model_name=_opt_str(obj, "modelName"), http_binding=_opt_str(obj, "httpBinding"),
            fetches_references=fetches)


def _bad(detail: str, path: str = "") -> NoReturn:
    raise avp.AvpError(avp.ErrorCode.INVALID_VALUE, detail, path=path)


def _integer(obj: Mapping[str, Any], key: str) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        _bad(f"{key} is not a number", key)
    if isinstance(v, float) and not v.is_integer():
        _bad(f"{key} is not an integer", key)
    n = int(v)
    if not 0 <= n <= MAX_SAFE_INTEGER:
        _bad(f"{key} is outside 0 .. 2^53-1", key)
    return n


def _hex_id(obj: Mapping[str, Any], key: str) -> bytes | None:
    v = obj.get(key)
    if v is None:
        return None
    if not is_hex64(v):
        _bad(f"{key} is not 64 lowercase hex digits", key)
    return bytes.fromhex(v)


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        _bad(f"{key} is not a string", key)
    return str(v)
