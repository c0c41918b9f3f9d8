"""The strict JSON profile (avp_codec._json): RFC 8259 only, explicit limits, bounded cost."""

from __future__ import annotations

import contextlib
import json
import resource

import pytest

import avp_codec as avp
from avp_codec import _json as sj

VALID = [
    "[1]", " [ ] ", "{}", '"x"', "0", "-0", "1.5e-3", "true", "null",
    '{"a":[1,{"b":null}],"c":"s"}', '"a\\"b\\u00e9"', '["\\ud800"]',  # RFC 8259 grammar allows it
    "1" + "0" * 5000,  # valid JSON of any length: checked for grammar, never converted
    "[" * sj.MAX_DEPTH + "]" * sj.MAX_DEPTH,
    "[" + ",".join(["0"] * (sj.MAX_VALUES - 1)) + "]",
]
INVALID = [
    "NaN", "[Infinity]", "[-Infinity]", '{"a":1,"a":2}', "01", "1.", ".5", "[1,]", "",
    "\ufeff[]", "[\u0661]", "'x'", '"\x01"', "[1] [2]", "{a:1}",
    "[" * (sj.MAX_DEPTH + 1) + "]" * (sj.MAX_DEPTH + 1),
    "[" + ",".join(["0"] * sj.MAX_VALUES) + "]",
]


@pytest.mark.parametrize("text", VALID)
def test_valid_json_within_the_limits_passes(text: str) -> None:
    sj.check_json_text(text)


@pytest.mark.parametrize("text", INVALID)
def test_anything_else_is_invalid_value(text: str) -> None:
    with pytest.raises(avp.AvpError) as e:
        sj.check_json_text(text, path="p")
    assert e.value.code is avp.ErrorCode.INVALID_VALUE and e.value.path == "p"


@pytest.mark.parametrize("text", [
    "[]", "{}", "[1,2,3]", '{"a":[1,{"b":null}],"c":"s"}', '"x"', "[[],[[]],{}]",
    '{"a:b":"c:d", "e":"f"}', '["a\\"s",  "q"]', '{"false":false,"s":"s"}',
])
def test_values_are_counted_exactly(text: str) -> None:
    def count(v: object) -> int:
        if isinstance(v, list):
            return 1 + sum(count(x) for x in v)
        if isinstance(v, dict):
            return 1 + sum(count(x) for x in v.values())
        return 1
    assert sj._count_values(sj._skeleton(text)) == count(json.loads(text))


def test_loads_gives_exact_types_and_refuses_numbers_no_field_can_hold() -> None:
    assert sj.loads(b'{"a":[1,2.5,"x",true,null]}') == {"a": [1, 2.5, "x", True, None]}
    assert type(sj.loads("7")) is int and type(sj.loads("7.0")) is float
    for bad in ["[1e400]", "1" + "0" * 100, b"\xff"]:
        with pytest.raises(avp.AvpError) as e:
            sj.loads(bad)
        assert e.value.code is avp.ErrorCode.INVALID_VALUE
    with pytest.raises(TypeError):
        sj.loads(3)  # type: ignore[arg-type]


@pytest.mark.timeout(120)  # linear time: ~1 s each here; a hang fails instead of stalling CI
@pytest.mark.parametrize("make", [
    lambda: "[" + "[]," * (5 << 20) + "[]]",  # 15 MiB of empty arrays
    lambda: '"' + "\\n" * (8 << 20) + '"',  # 16 MiB of escapes in one string
    lambda: "[" * (8 << 20) + "]" * (8 << 20),  # 16 MiB of nesting
])
def test_hostile_texts_cost_linear_time_and_no_memory_beyond_a_copy(make: object) -> None:
    text = make()  # type: ignore[operator]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with contextlib.suppress(avp.AvpError):
        sj.check_json_text(text)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 2 * len(text) / 2**20 + 16  # at most a skeleton copy of the text


@pytest.mark.parametrize("old,new", [
    ('"uint8"', '"UINT8"'), ('"uint8"', '"u\u0131nt8"'), ('"uint8"', '"uint\u0668"'),
    ('"group_size":64', '"group_size":64.0'), ('"group_size":64', '"group_size":true'),
    ('"zero_point":true', '"zero_point":"true"'), ('"zero_point":true', '"zero_point":1'),
    ('"method":"uniform"', '"method":7'), ('"budget_ratio":null', '"budget_ratio":false'),
    ('"layers":[]', '"layers":[{"layer":1.0,"key":null,"value":null}]')])
def test_quant_policy_text_has_exact_types_and_names(old: str, new: str) -> None:
    """Issue 14: a QUANT_POLICY setting is read with exact JSON types and registry names
    matched byte for byte (no upper(), int() or bool() coercion of look-alikes)."""
    from avp_codec import quant
    text = quant.preset("int8").to_json()
    assert old in text
    assert quant.QuantPolicy.from_json(text) == quant.preset("int8")
    with pytest.raises(avp.AvpError) as ei:
        quant.QuantPolicy.from_json(text.replace(old, new, 1))
    assert ei.value.code == avp.ErrorCode.QUANT_PARAMS
