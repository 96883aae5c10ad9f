"""Tests of xtc/config.py: the settings' dataclasses and their validation."""
import pytest

from xtc.quant import QuantSpec


@pytest.mark.parametrize("bits, ok", [(b, True) for b in (1, 2, 3, 4, 5, 6, 7, 8, 32)] +
                         [(b, False) for b in (0, 9, 16, 31, 33)])
def test_every_supported_weight_width_and_no_other(bits, ok):
    """Mutation survivors: a changed member of WEIGHT_BITS (e.g. 3 -> 4) went unnoticed. (ACT_BITS is left to the
    validation rework that narrows --abits.)"""
    from xtc.quant import QuantSpec

    if ok:
        assert QuantSpec(wbits=bits).validate().wbits == bits
    else:
        with pytest.raises(ValueError, match=rf"wbits must be one of .*, got {bits} \(QuantSpec.wbits\)"):
            QuantSpec(wbits=bits).validate()


@pytest.mark.parametrize("kw,match", [
    (dict(wbits=0), "wbits"), (dict(wbits=9), "wbits"), (dict(wbits=16), "wbits"),
    (dict(abits=1), "abits"), (dict(abits=16), "abits"), (dict(wbits=1, method="uniform"), "xtc"),
    (dict(roles=("query", "pooler")), "pooler"), (dict(groups=0), "groups"), (dict(method="gptq"), "method"),
    (dict(wbits=1, embedding_bits=12), "embedding_bits"),
])
def test_spec_validation_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        QuantSpec(**kw).validate()


def test_spec_roundtrip_and_is_quantized():
    spec = QuantSpec(wbits=2, abits=8, groups=4, roles=("query", "key"), embedding_bits=32)
    d = spec.to_dict()
    assert d["roles"] == ["query", "key"]
    assert QuantSpec.from_dict(d) == spec
    assert spec.is_quantized and not QuantSpec().is_quantized
    assert QuantSpec(abits=8).is_quantized
    with pytest.raises(ValueError, match="unknown"):
        QuantSpec.from_dict({**d, "wbit": 1})
