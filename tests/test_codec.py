"""xtc.codec: every registered weight codec keeps the one contract fake quantization, export, loading and integer
inference rely on (codes and scales, fake-quant values equal to the dequantized codes, exact byte counts, lossless
pack/unpack, row decoding equal to unpacking), and the registry maps (bits, method) the way the settings say.
A toy 4-bit codec with a per-group zero point in its bytes runs through the same contract: the interface carries
a scheme with side data, so such a scheme is one new Codec class (plus its entry in CODECS)."""
import math

import numpy as np
import pytest
import torch

from xtc import config
from xtc.codec import CODECS, METHODS, Codec, Ternary, UintK, codec_for


class Asym4(Codec):
    """4-bit codes with an asymmetric zero point: u = clamp(round(W / a) + z, 0, 15), code = u - z in
    [-15, 15]. The bytes hold each group's -min(code) as an int8 header byte, then the u's as nibbles."""
    scheme, packing, bits, methods = "asym", "asym-4", 4, ("asym",)

    def quantize(self, wf):
        lo, hi = wf.amin(dim=1), wf.amax(dim=1)
        a = (hi - lo) / 15
        a = torch.where(a > 0, a, torch.ones_like(a))
        z = torch.round(-lo / a).clamp(0, 15)[:, None]
        u = (torch.round(wf / a[:, None]) + z).clamp(0, 15)
        return (u - z).to(torch.int8), a

    def nbytes(self, numel, groups):
        return groups + math.ceil(numel / 2)

    def pack(self, codes, groups):
        c = codes.reshape(groups, -1).to(torch.int16)
        z = -c.amin(dim=1, keepdim=True)
        u = (c + z).reshape(-1).numpy().astype(np.uint8)
        u = np.concatenate([u, np.zeros(len(u) % 2, np.uint8)]).reshape(-1, 2)
        return torch.cat([z.reshape(-1).to(torch.int8).view(torch.uint8), torch.from_numpy(u[:, 0] | (u[:, 1] << 4))])

    def unpack(self, data, numel, groups):
        assert data.numel() == self.nbytes(numel, groups)
        z = data[:groups].view(torch.int8).to(torch.int16)
        body = data[groups:].to(torch.int16)
        u = torch.stack([body & 15, body >> 4], dim=1).reshape(-1)[:numel]
        return (u.reshape(groups, -1) - z[:, None]).reshape(-1).to(torch.int8)

    def decode_rows(self, buffer, ids, shape, groups):
        rows, dim = shape
        flat = ids.reshape(-1).to(torch.int64)
        elem = flat.unsqueeze(1) * dim + torch.arange(dim)
        byte = buffer[groups + (elem >> 1)].to(torch.int32)
        z = buffer[:groups].view(torch.int8).to(torch.int32)[flat // (rows // groups)]
        return (((byte >> (4 * (elem & 1)).to(torch.int32)) & 15) - z[:, None]).reshape(*ids.shape, dim)


def _weights(groups: int, per_group: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(groups, per_group, generator=g)
    w[0, :3] = 0.0  # zeros sit exactly on a threshold of every scheme
    return w


@pytest.mark.parametrize("codec", [*CODECS, Asym4()], ids=lambda c: c.packing)
def test_every_codec_keeps_the_contract(codec):
    wf = _weights(3, 10)  # 30 values: a multiple of no packing's run
    codes, scales = codec.quantize(wf)
    assert codes.dtype == torch.int8 and codes.shape == wf.shape
    assert scales.dtype == torch.float32 and scales.shape == (3,)
    for dtype in (torch.float32, torch.bfloat16):  # the training forward's numbers are the deployed ones
        fake = codec.fake_quant(wf, dtype)
        assert fake.dtype == dtype and torch.equal(fake, codec.dequantize(codes, scales, dtype))
    data = codec.pack(codes, 3)
    assert data.dtype == torch.uint8 and data.numel() == codec.nbytes(30, 3)
    assert torch.equal(codec.unpack(data, 30, 3), codes.reshape(-1))
    assert codec.corruption(data) is None
    for rows, dim, groups in ((10, 40, 10), (10, 7, 5), (6, 5, 2)):  # rows on byte boundaries, and mid-byte
        table, _ = codec.quantize(_weights(groups, rows // groups * dim, seed=dim))
        table = table.reshape(rows, dim)
        buffer = codec.row_buffer(codec.pack(table, groups))
        ids = torch.tensor([[rows - 1, 0, 3], [2, 2, rows - 1]])
        decoded = codec.decode_rows(buffer, ids, (rows, dim), groups)
        assert decoded.shape == (2, 3, dim) and torch.equal(decoded.to(torch.int8), table[ids])


def test_registry_maps_bits_and_method_to_one_codec_each():
    assert [c.packing for c in CODECS] == ["binary-8", "ternary-5", *(f"uint-{k}" for k in range(2, 9))]
    assert codec_for(1).scheme == "binary" and codec_for(2, "xtc").scheme == "ternary"
    assert codec_for(2, "uniform").packing == "uint-2" and codec_for(5, "xtc") is codec_for(5, "uniform")
    assert codec_for(32, "xtc") is None and codec_for(32, "uniform") is None
    with pytest.raises(ValueError, match=r"^unsupported weight bit-width 1 for method 'uniform'; use 2\.\.8 or 32 "
                                         r"\(1-bit needs method='xtc'\)$"):
        codec_for(1, "uniform")
    with pytest.raises(ValueError, match=r"^unknown quantization method 'asym'"):
        codec_for(4, "asym")


def test_the_settings_offer_exactly_the_registered_schemes():
    # config.py must stay free of torch (tests/test_imports.py), so it cannot read CODECS itself: this is the
    # check that the --quant-method / --wbits choices and the registry agree
    assert config.METHODS == METHODS
    assert set(config.WEIGHT_BITS) == {c.bits for c in CODECS} | {32}


def test_byte_counts_by_hand_and_corrupt_ternary_bytes():
    assert [codec_for(1).nbytes(9, 1), codec_for(2).nbytes(11, 1), codec_for(3).nbytes(3, 1)] == [2, 3, 2]
    assert Ternary().corruption(torch.tensor([242, 243], dtype=torch.uint8)) == \
        "a ternary byte above 242 cannot hold 5 trits (corrupted data)"
    assert UintK(3).codes_per_run() == 8 and UintK(4).codes_per_run() == 2 and UintK(6).codes_per_run() == 4
    with pytest.raises(ValueError, match="bits must be 1..8, got 9"):
        UintK(9)
