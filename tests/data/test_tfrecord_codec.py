"""TFRecord framing and tf.train.Example wire format, without TensorFlow."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seedrl.data.formats import tf_example as tfe
from seedrl.data.formats import tfrecord as tfr

I64_MIN, I64_MAX = -(2**63), 2**63 - 1

# ---------------------------------------------------------------------------
# CRC-32C and masking
# ---------------------------------------------------------------------------


def test_crc32c_known_vector():
    assert tfr.crc32c(b"123456789") == 0xE3069283
    assert tfr._crc32c_py(b"123456789") == 0xE3069283
    assert tfr.crc32c(b"") == 0
    assert tfr._crc32c_py(b"") == 0
    # RFC 3720 B.4 vectors
    assert tfr._crc32c_py(bytes(32)) == 0x8A9136AA
    assert tfr._crc32c_py(b"\xff" * 32) == 0x62A8AB43
    assert tfr._crc32c_py(bytes(range(32))) == 0x46DD794E


@given(st.binary(max_size=300))
def test_python_crc_matches_active_impl(data):
    assert tfr._crc32c_py(data) == tfr.crc32c(data)
    # incremental continuation
    half = len(data) // 2
    assert tfr._crc32c_py(data[half:], tfr._crc32c_py(data[:half])) == tfr.crc32c(data)


@given(st.binary(max_size=64))
def test_mask_unmask(data):
    masked = tfr.masked_crc32c(data)
    crc = tfr.crc32c(data)
    assert masked == ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
    assert tfr.unmask_crc32c(masked) == crc


def test_known_record_bytes():
    # An empty record and b"a": header crc over the 8 length bytes.
    rec = tfr.encode_record(b"")
    assert rec[:8] == bytes(8)
    assert struct.unpack("<I", rec[8:12])[0] == tfr.masked_crc32c(bytes(8))
    assert len(rec) == 16
    rec = tfr.encode_record(b"a")
    assert len(rec) == 17 and rec[12:13] == b"a"


# ---------------------------------------------------------------------------
# TFRecord round trips
# ---------------------------------------------------------------------------


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_records_round_trip(tmp_path, records):
    path = tmp_path / "r.tfrecord"
    n = tfr.write_records(path, records)
    assert n == len(records)
    assert list(tfr.read_records(path)) == records
    assert list(tfr.read_records(str(path), verify=False)) == records
    assert path.stat().st_size == sum(16 + len(r) for r in records)


def test_writer_context_manager(tmp_path):
    path = tmp_path / "w.tfrecord"
    with tfr.TFRecordWriter(path) as w:
        w.write(b"one")
        w.write(bytearray(b"two"))
        w.write(memoryview(b"three"))
        assert w.num_records == 3
    assert list(tfr.read_records(path)) == [b"one", b"two", b"three"]
    with pytest.raises(ValueError):
        w.write(b"closed")
    with tfr.TFRecordWriter(tmp_path / "x") as w2:
        with pytest.raises(TypeError):
            w2.write("not bytes")  # type: ignore[arg-type]


def test_writer_to_stream():
    buf = io.BytesIO()
    with tfr.TFRecordWriter(buf) as w:
        w.write(b"abc")
    assert not buf.closed
    assert buf.getvalue() == tfr.encode_record(b"abc")


def test_large_record(tmp_path):
    data = np.random.default_rng(0).bytes(3 << 20)
    path = tmp_path / "big"
    tfr.write_records(path, [data, b"", data[:10]])
    assert list(tfr.read_records(path)) == [data, b"", data[:10]]


# ---------------------------------------------------------------------------
# Corruption
# ---------------------------------------------------------------------------


def _write(tmp_path, records):
    path = tmp_path / "c.tfrecord"
    tfr.write_records(path, records)
    return path, bytearray(path.read_bytes())


@pytest.mark.parametrize("where", ["length", "length_crc", "data", "data_crc"])
def test_flipped_byte_detected(tmp_path, where):
    records = [b"first record", b"second record!", b"third"]
    path, raw = _write(tmp_path, records)
    second = 16 + len(records[0])  # byte offset of the second record
    pos = {
        "length": second + 0,
        "length_crc": second + 9,
        "data": second + 12 + 3,
        "data_crc": second + 12 + len(records[1]) + 1,
    }[where]
    raw[pos] ^= 0x40
    path.write_bytes(bytes(raw))
    it = tfr.read_records(path)
    assert next(it) == records[0]
    with pytest.raises(ValueError) as ei:
        next(it)
    msg = str(ei.value)
    assert str(path) in msg
    assert f"offset {second}" in msg


def test_flipped_data_byte_passes_without_verify(tmp_path):
    path, raw = _write(tmp_path, [b"hello world"])
    raw[14] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="CRC"):
        list(tfr.read_records(path))
    (got,) = tfr.read_records(path, verify=False)
    assert got != b"hello world" and len(got) == 11


@pytest.mark.parametrize("cut", [1, 4, 8, 11, 12, 14, 15])
def test_truncated_file(tmp_path, cut):
    records = [b"aaaa", b"bbbbbbbb"]
    path, raw = _write(tmp_path, records)
    total = len(raw)
    path.write_bytes(bytes(raw[: total - cut]))
    for verify in (True, False):
        it = tfr.read_records(path, verify=verify)
        assert next(it) == b"aaaa"
        with pytest.raises(ValueError, match="truncated") as ei:
            next(it)
        assert str(path) in str(ei.value) and "offset 20" in str(ei.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert list(tfr.read_records(path)) == []


# ---------------------------------------------------------------------------
# Varints
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,encoded",
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (-1, b"\xff" * 9 + b"\x01"),
        (I64_MIN, b"\x80" * 9 + b"\x01"),
        (I64_MAX, b"\xff" * 8 + b"\x7f"),
    ],
)
def test_varint_vectors(value, encoded):
    assert tfe.encode_varint(value) == encoded
    assert tfe._encode_varints_np(np.array([value], dtype=np.int64)) == encoded
    assert tfe.decode_varint(encoded) == (value & (2**64 - 1), len(encoded))
    assert tfe._decode_varints_np(encoded, 0, len(encoded)).tolist() == [value]


@given(st.lists(st.integers(I64_MIN, I64_MAX), max_size=50))
def test_packed_varints_round_trip(values):
    arr = np.array(values, dtype=np.int64)
    enc = tfe._encode_varints_np(arr)
    assert enc == b"".join(tfe.encode_varint(v) for v in values)
    assert tfe._decode_varints_np(enc, 0, len(enc)).tolist() == values


def test_bad_varints():
    with pytest.raises(ValueError):
        tfe.decode_varint(b"\x80\x80")
    with pytest.raises(ValueError):
        tfe.decode_varint(b"\x80" * 11 + b"\x01")
    with pytest.raises(ValueError):
        tfe._decode_varints_np(b"\x01\x80", 0, 2)
    with pytest.raises(ValueError):
        tfe._decode_varints_np(b"\x80" * 10 + b"\x01", 0, 11)


# ---------------------------------------------------------------------------
# tf.train.Example
# ---------------------------------------------------------------------------

_keys = st.text(max_size=12)
_floats32 = st.integers(0, 2**32 - 1).map(lambda u: np.array([u], np.uint32).view(np.float32)[0])
_feature = st.one_of(
    st.tuples(st.just("bytes"), st.lists(st.binary(max_size=20), max_size=5)),
    st.tuples(
        st.just("float"),
        st.lists(st.integers(0, 2**32 - 1), max_size=8).map(
            lambda us: np.array(us, dtype=np.uint32).view(np.float32)
        ),
    ),
    st.tuples(
        st.just("int64"),
        st.lists(
            st.one_of(st.integers(I64_MIN, I64_MAX), st.sampled_from([I64_MIN, I64_MAX, -1, 0])),
            max_size=8,
        ).map(lambda v: np.array(v, dtype=np.int64)),
    ),
)


def _assert_same(decoded, features):
    assert set(decoded) == set(features)
    for k, (kind, values) in features.items():
        dkind, dvalues = decoded[k]
        assert dkind == kind
        if kind == "bytes":
            assert dvalues == [bytes(v) for v in values]
        elif kind == "float":
            assert dvalues.dtype == np.float32
            # bit-exact, NaN payloads included
            exp = np.asarray(values, dtype=np.float32).reshape(-1)
            assert dvalues.view(np.uint32).tolist() == exp.view(np.uint32).tolist()
        else:
            assert dvalues.dtype == np.int64
            assert dvalues.tolist() == np.asarray(values, dtype=np.int64).reshape(-1).tolist()


@given(st.dictionaries(_keys, _feature, max_size=6))
def test_example_round_trip(features):
    data = tfe.encode_example(features)
    _assert_same(tfe.decode_example(data), features)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.dictionaries(_keys, _feature, max_size=4), max_size=5))
def test_examples_in_tfrecord(tmp_path, examples):
    path = tmp_path / "ex.tfrecord"
    tfr.write_records(path, (tfe.encode_example(e) for e in examples))
    got = [tfe.decode_example(r) for r in tfr.read_records(path)]
    assert len(got) == len(examples)
    for g, e in zip(got, examples):
        _assert_same(g, e)


def test_example_known_bytes():
    # Hand-checked against the proto definitions (and against TF in tests/compat).
    ex = tfe.encode_example({"a": ("int64", [1]), "b": ("float", [1.0]), "c": ("bytes", [b"x"])})
    expected = (
        b"\x0a\x27"  # Example.features, 39 bytes
        b"\x0a\x0a" b"\x0a\x01a" b"\x12\x05" b"\x1a\x03" b"\x0a\x01\x01"
        b"\x0a\x0d" b"\x0a\x01b" b"\x12\x08" b"\x12\x06" b"\x0a\x04\x00\x00\x80\x3f"
        b"\x0a\x0a" b"\x0a\x01c" b"\x12\x05" b"\x0a\x03" b"\x0a\x01x"
    )
    assert ex == expected


def test_empty_lists_and_empty_example():
    assert tfe.decode_example(tfe.encode_example({})) == {}
    assert tfe.decode_example(b"") == {}
    d = tfe.decode_example(
        tfe.encode_example({"b": ("bytes", []), "f": ("float", []), "i": ("int64", [])})
    )
    assert d["b"] == ("bytes", [])
    assert d["f"][0] == "float" and d["f"][1].shape == (0,) and d["f"][1].dtype == np.float32
    assert d["i"][0] == "int64" and d["i"][1].shape == (0,) and d["i"][1].dtype == np.int64


def test_nan_payload_bit_exact():
    bits = np.array([0x7FC00001, 0xFFBADBAD, 0x7F800001, 0x80000000, 0x7F800000], np.uint32)
    d = tfe.decode_example(tfe.encode_example({"x": ("float", bits.view(np.float32))}))
    assert d["x"][1].view(np.uint32).tolist() == bits.tolist()


def test_input_conveniences():
    d = tfe.decode_example(
        tfe.encode_example(
            {
                "img": ("int64", np.arange(12, dtype=np.uint8).reshape(2, 2, 3)),
                "s": ("bytes", "héllo"),
                "strs": ("bytes", np.array([b"a", b"bc"], dtype=object)),
                "f": ("float", np.float64(2.5)),
                "f64": ("float", np.array([[0.1, 0.2]])),
                "u64": ("int64", np.array([2**63 - 1], dtype=np.uint64)),
                "pyints": ("int64", [I64_MIN, I64_MAX]),
                "bools": ("int64", [True, False]),
            }
        )
    )
    assert d["img"][1].tolist() == list(range(12))
    assert d["s"] == ("bytes", ["héllo".encode()])
    assert d["strs"] == ("bytes", [b"a", b"bc"])
    assert d["f"][1].tolist() == [2.5]
    assert d["f64"][1].tolist() == np.array([0.1, 0.2], np.float32).tolist()
    assert d["u64"][1].tolist() == [I64_MAX]
    assert d["pyints"][1].tolist() == [I64_MIN, I64_MAX]
    assert d["bools"][1].tolist() == [1, 0]


def test_encode_errors():
    with pytest.raises(ValueError, match="kind"):
        tfe.encode_example({"a": ("double", [1.0])})
    with pytest.raises(TypeError):
        tfe.encode_example({"a": ("int64", [1.5])})
    with pytest.raises(TypeError):
        tfe.encode_example({"a": ("bytes", [1])})
    with pytest.raises(TypeError):
        tfe.encode_example({"a": ("float", ["x"])})
    with pytest.raises(TypeError):
        tfe.encode_example({"a": [1, 2, 3]})  # type: ignore[dict-item]
    with pytest.raises(OverflowError):
        tfe.encode_example({"a": ("int64", [2**63])})
    with pytest.raises(OverflowError):
        tfe.encode_example({"a": ("int64", [-(2**63) - 1])})
    with pytest.raises(OverflowError):
        tfe.encode_example({"a": ("int64", np.array([2**64 - 1], dtype=np.uint64))})


# -- liberal decoding: unpacked encodings, unknown fields, merging ------------


def _ld(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + tfe.encode_varint(len(payload)) + payload


def _example(entries: list[tuple[bytes, bytes]]) -> bytes:
    return _ld(0x0A, b"".join(_ld(0x0A, _ld(0x0A, k) + _ld(0x12, feat)) for k, feat in entries))


def test_unpacked_repeated_accepted():
    floats = np.array([1.5, -2.0, np.inf], np.float32)
    float_list = b"".join(b"\x0d" + f.tobytes() for f in floats)
    ints = [5, -7, I64_MAX, I64_MIN]
    int_list = b"".join(b"\x08" + tfe.encode_varint(v) for v in ints)
    # mixed packed + unpacked in one list too
    mixed = b"\x08\x01" + _ld(0x0A, b"\x02\x03") + b"\x08\x04"
    data = _example(
        [
            (b"f", _ld(0x12, float_list)),
            (b"i", _ld(0x1A, int_list)),
            (b"m", _ld(0x1A, mixed)),
            (b"fm", _ld(0x12, _ld(0x0A, floats[:1].tobytes()) + b"\x0d" + floats[1:2].tobytes())),
        ]
    )
    d = tfe.decode_example(data)
    assert d["f"][1].tolist() == floats.tolist()
    assert d["i"][1].tolist() == ints
    assert d["m"][1].tolist() == [1, 2, 3, 4]
    assert d["fm"][1].tolist() == floats[:2].tolist()


def test_unknown_fields_skipped_and_merging():
    unknown = b"\x78\x05" + b"\x81\x01" + bytes(8) + b"\x85\x01" + bytes(4)
    unknown += bytes([0x7A]) + tfe.encode_varint(2) + b"zz"  # field 15, LEN
    feat_i = _ld(0x1A, _ld(0x0A, b"\x01\x02") + unknown)
    data = unknown + _example([(b"k", unknown + feat_i), (b"dup", _ld(0x0A, _ld(0x0A, b"old")))])
    data += _example([(b"dup", _ld(0x0A, _ld(0x0A, b"new")))])  # second Features merges
    d = tfe.decode_example(data)
    assert d["k"][1].tolist() == [1, 2]
    assert d["dup"] == ("bytes", [b"new"])  # map: last entry wins
    # same oneof member twice merges; a different member replaces
    same = _ld(0x1A, _ld(0x0A, b"\x01")) + _ld(0x1A, _ld(0x0A, b"\x02"))
    assert tfe.decode_feature(same)[1].tolist() == [1, 2]
    other = _ld(0x1A, _ld(0x0A, b"\x01")) + _ld(0x0A, _ld(0x0A, b"s"))
    assert tfe.decode_feature(other) == ("bytes", [b"s"])
    assert tfe.decode_feature(b"") == (None, [])
    assert tfe.decode_example(_example([(b"none", b"")])) == {"none": (None, [])}


@pytest.mark.parametrize(
    "bad",
    [
        b"\x0a\x05\x0a\x03",  # overrun
        b"\x0a",  # truncated length
        b"\x0b",  # start-group wire type
        b"\x00\x00",  # field number 0
        _example([(b"f", _ld(0x12, _ld(0x0A, b"\x00\x00\x00")))]),  # float bytes % 4
        _example([(b"i", _ld(0x1A, _ld(0x0A, b"\x80")))]),  # truncated packed varint
        _example([(b"\xff\xfe", _ld(0x0A, b""))]),  # key not UTF-8
        _example([(b"f", _ld(0x12, b"\x0d\x00\x00"))]),  # truncated fixed32
    ],
)
def test_malformed_examples_raise(bad):
    with pytest.raises(ValueError, match="malformed"):
        tfe.decode_example(bad)


def test_large_example_fast_paths():
    rng = np.random.default_rng(1)
    ints = rng.integers(I64_MIN, I64_MAX, size=100_000, dtype=np.int64, endpoint=True)
    floats = rng.standard_normal(100_000).astype(np.float32)
    data = tfe.encode_example({"i": ("int64", ints), "f": ("float", floats)})
    d = tfe.decode_example(data)
    assert np.array_equal(d["i"][1], ints)
    assert np.array_equal(d["f"][1], floats)


def test_imports_without_crc32c_package(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['crc32c'] = None\n"
        "from seedrl.data.formats import tfrecord as t\n"
        "assert not t.HAVE_FAST_CRC32C\n"
        "assert t.crc32c(b'123456789') == 0xE3069283\n"
        f"p = {str(tmp_path / 'f.tfrecord')!r}\n"
        "t.write_records(p, [b'x' * 1000, b''])\n"
        "assert list(t.read_records(p)) == [b'x' * 1000, b'']\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
