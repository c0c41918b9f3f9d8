"""Vectors for "JSON text" (spec R-10.15, review item 16): QUANT_POLICY values at and just past
each limit of the strict RFC 8259 profile, and each thing RFC 8259 does not allow. The same rule
holds for every decoder, so every case is required."""

from __future__ import annotations

from .gen_common import CaseDef, ent, kv_message
from .gen_invalid_framing import invalid
from .gen_valid import valid

REQ = ["R-10.15", "R-6.4"]

# (id suffix, JSON text, comment): valid QUANT_POLICY values.
VALID: list[tuple[str, str, str]] = [
    ("depth-64", "[" * 64 + "]" * 64, "64 nested arrays: the depth limit, passes"),
    ("depth-64-objects", '{"a":' * 63 + "{}" + "}" * 63, "64 nested objects"),
    ("values-65536", "[" + "0," * 65534 + "0]", "an array of 65535 numbers: 65536 values with"
     " the array itself, the limit, passes"),
    ("integer-5000-digits", "9" * 5000, "a 5000-digit integer: numbers of any length are valid"
     " JSON and a decoder need not convert them"),
    ("top-level-null", "null", "any JSON value may stand at the top level"),
    ("top-level-string", '"x"', "a string at the top level"),
    ("whitespace-around", ' \t\r\n{"a": [1, 2]} \n', "whitespace before and after the value"),
    ("escaped-lone-surrogate", '["\\ud800"]', "an escaped lone surrogate is grammatical"),
    ("unicode-escapes", '{"\\u00e9t\\u00e9":"\\u2603\\n\\"\\\\\\/"}', "every escape form"),
    ("numbers", "[-0,0.5,1e10,1E+2,-1.25e-3,123456789012345678901234567890]",
     "the number grammar: minus zero, fraction, exponents, a long integer"),
    ("same-name-in-two-objects", '[{"a":1},{"a":2}]', "names are unique per object only"),
    ("empty-containers", '{"a":{},"b":[],"c":""}', "empty object, array and string"),
    ("utf8-text", '{"policy":"k\u00e4se \u2603"}', "non-ASCII characters as UTF-8"),
    ("reference-form", '{"avp_quant_policy":1,"method":"uniform","budget_ratio":null,'
     '"default":{"key":null,"value":null},"layers":[]}', "the RECOMMENDED form of 12.3"),
]

# (id suffix, JSON text, comment): invalid QUANT_POLICY values.
INVALID: list[tuple[str, str, str]] = [
    ("depth-65", "[" * 65 + "]" * 65, "65 nested arrays: one past the depth limit"),
    ("depth-65-mixed", '[{"a":' * 32 + "[]" + "}]" * 32, "65 levels of arrays and objects"),
    ("values-65537", "[" + "0," * 65535 + "0]", "an array of 65536 numbers: 65537 values, one "
     "past the limit"),
    ("duplicate-names", '{"a":1,"a":2}', "a member name twice in one object"),
    ("duplicate-names-escaped", '{"a":1,"\\u0061":2}', "the same name, once escaped"),
    ("nan", "NaN", "NaN is not JSON"),
    ("infinity", "[Infinity]", "Infinity is not JSON"),
    ("minus-infinity", '{"x":-Infinity}', "-Infinity is not JSON"),
    ("trailing-comma", "[1,2,]", "a trailing comma"),
    ("single-quotes", "{'a':1}", "single-quoted strings"),
    ("leading-zero", "[01]", "a number with a leading zero"),
    ("leading-dot", "[.5]", "a number starting with a dot"),
    ("trailing-dot", "[1.]", "a number ending with a dot"),
    ("plus-sign", "[+1]", "a number with a plus sign"),
    ("hex-number", "[0x10]", "a hexadecimal number"),
    ("control-character", '["a\tb"]', "an unescaped tab inside a string"),
    ("bad-escape", '["\\x41"]', "\\x is not a JSON escape"),
    ("two-values", "1 2", "two values at the top level"),
    ("empty", "", "no value at all"),
    ("only-whitespace", "  \n", "only whitespace"),
    ("comment", "[1/*c*/]", "a comment"),
    ("bare-word", "[undefined]", "a bare word"),
    ("unterminated-string", '["abc]', "a string that does not end"),
    ("unclosed-array", "[1,2", "an array that does not end"),
]


def cases() -> list[CaseDef]:
    out = []
    for name, text, comment in VALID:
        out.append(valid(f"10.1/json-text-{name}", "10.1", REQ, f"QUANT_POLICY: {comment}",
                         kv_message(extra=[ent("QUANT_POLICY", text)])))
    for name, text, comment in INVALID:
        out.append(invalid(f"10.1/json-text-{name}", "10.1", REQ, f"QUANT_POLICY: {comment}",
                           "INVALID_VALUE", msg=kv_message(extra=[ent("QUANT_POLICY", text)]),
                           fault="entry[2]"))
    return out
