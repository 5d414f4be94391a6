"""The wire format: round trips, and every kind of bad message rejected."""
import struct

import pytest

from nodes import syncproto as sp
from nodes.packet import ip_bytes, make_key

KEY = b"k" * 32
A, B = ip_bytes("10.0.0.1"), ip_bytes("10.0.0.201")
CONN = make_key(6, A, 40000, B, 21)

RECORDS = [
    (sp.R_ENTRY, {"key": CONN, "state": "ESTABLISHED", "owner": 2, "timeout": 431999.5,
                  "helper": "ftp", "master": None}),
    (sp.R_ENTRY, {"key": make_key(6, B, 20, A, 50000), "state": "SYN_SENT", "owner": 3, "timeout": 120.0,
                  "helper": None, "master": CONN}),
    (sp.R_ENTRY_DEL, {"key": CONN, "owner": 2}),
    (sp.R_EXPECT, {"proto": 6, "src": None, "dst": A, "dport": 50000, "owner": 2,
                   "timeout": 300.0, "master": CONN}),
    (sp.R_EXPECT_DEL, {"proto": 6, "src": A, "dst": B, "dport": 50001, "owner": 2}),
    (sp.R_COMMON, {"owner": 1, "name": "vpn:tunnel1", "value": b"\x01\x02secret"}),
    (sp.R_BULK_REQUEST, {}),
    (sp.R_BULK_END, {"records": 12345}),
    (sp.R_BULK_START, {}),
]


def test_every_record_type_round_trips():
    msg = sp.Message(sp.DATA, 2, 3, 1700000000000, 7, 5, RECORDS)
    back = sp.decode(sp.encode(msg, KEY), KEY)
    assert (back.type, back.sender, back.receiver, back.boot, back.seq, back.ack) == \
        (sp.DATA, 2, 3, 1700000000000, 7, 5)
    assert back.records == RECORDS


def test_heartbeat_and_ack_round_trip():
    hb = sp.decode(sp.encode(sp.Message(sp.HEARTBEAT, 1, 0, 9, members=[1, 2, 5]), KEY), KEY)
    assert hb.members == [1, 2, 5] and hb.ready
    hb = sp.decode(sp.encode(sp.Message(sp.HEARTBEAT, 1, 0, 9, members=[], ready=False), KEY), KEY)
    assert hb.members == [] and not hb.ready
    ack = sp.decode(sp.encode(sp.Message(sp.ACK, 1, 2, 9, 0, 41), KEY), KEY)
    assert (ack.type, ack.ack) == (sp.ACK, 41)


def good() -> bytes:
    return sp.encode(sp.Message(sp.DATA, 2, 3, 9, 1, 0, RECORDS[:2]), KEY)


def reframe(body: bytes) -> bytes:
    """A message whose HMAC is right but whose content is crafted."""
    import hashlib
    import hmac
    return body + hmac.new(KEY, body, hashlib.sha256).digest()[:sp.MAC_LEN]


@pytest.mark.parametrize("data, reason", [
    (b"", "short"),
    (good()[:20], "short"),
    (good()[:-1], "bad_length"),
    (good() + b"x", "bad_length"),
    (b"XX" + good()[2:], "bad_magic"),
    (good()[:2] + b"\x09" + good()[3:], "bad_version"),
    (good()[:40] + bytes([good()[40] ^ 1]) + good()[41:], "bad_mac"),  # a flipped bit
    (good()[:17] + bytes([good()[17] ^ 1]) + good()[18:], "bad_mac"),  # another receiver
    (sp.encode(sp.Message(sp.DATA, 2, 3, 9, 1, 0, RECORDS[:2]), b"other key"), "bad_mac"),
    (reframe(good()[:2] + bytes([sp.VERSION, 99]) + good()[4:-sp.MAC_LEN]), "bad_type"),
    (reframe(sp.HEADER.pack(sp.MAGIC, sp.VERSION, sp.DATA, 2, 3, 9, 0, 1, 0, 3, 0) + b"\x01\x00\x09"),
     "bad_record"),
    (reframe(sp.HEADER.pack(sp.MAGIC, sp.VERSION, sp.DATA, 2, 3, 9, 0, 1, 0, 3, 0) + b"\x63\x00\x00"),
     "bad_record"),
])
def test_bad_messages_are_rejected_with_a_reason(data, reason):
    with pytest.raises(sp.Reject) as err:
        sp.decode(data, KEY)
    assert err.value.reason == reason


def test_home_forwarding_messages_round_trip():
    frame = bytes(range(60))
    q = sp.decode(sp.encode(sp.Message(sp.HOME_QUERY, 2, 0, 9, query=77, ingress=1,
                                       frame=frame), KEY), KEY)
    assert (q.query, q.ingress, q.frame) == (77, 1, frame)
    a = sp.decode(sp.encode(sp.Message(sp.HOME_ANSWER, 1, 2, 9, query=77, home=1, key=CONN),
                            KEY), KEY)
    assert (a.query, a.home, a.key) == (77, 1, CONN)
    f = sp.decode(sp.encode(sp.Message(sp.FORWARD, 2, 1, 9, ingress=0, frame=frame), KEY), KEY)
    assert (f.ingress, f.frame) == (0, frame)


def test_a_forward_or_query_with_an_ingress_other_than_outside_or_inside_is_rejected():
    """A FORWARD whose ingress was 2 ended the node (IndexError in the engine)."""
    for mtype in (sp.FORWARD, sp.HOME_QUERY):
        good = sp.encode(sp.Message(mtype, 1, 2, 100, ingress=1, frame=b"x" * 60), KEY)
        assert sp.decode(good, KEY).ingress == 1
        bad = sp.encode(sp.Message(mtype, 1, 2, 100, ingress=2, frame=b"x" * 60), KEY)
        with pytest.raises(sp.Reject, match="bad_record"):
            sp.decode(bad, KEY)


def _one_by_one(payload: bytes):
    """Records decoded one at a time by ``_decode_record``, the long way."""
    out, off = [], 0
    while off < len(payload):
        rtype, length = sp._REC.unpack_from(payload, off)
        value = payload[off + 3:off + 3 + length]
        if len(value) != length:
            raise ValueError("record runs past the payload")
        off += 3 + length
        lay = sp._V4
        if sp.R_ENTRY + sp.IPV6_RECORD <= rtype <= sp.R_EXPECT_DEL + sp.IPV6_RECORD:
            rtype, lay = rtype - sp.IPV6_RECORD, sp._V6
        out.append((rtype, sp._decode_record(rtype, value, lay)))
    return out


def _decoded(decode, payload: bytes):
    try:
        return decode(payload)
    except (struct.error, ValueError, IndexError, KeyError):  # what decode takes for
        return "refused"                                        # a bad record


def test_the_short_way_for_connections_decodes_as_the_long_way_good_records_and_bad():
    """decode_records reads a plain IPv4 ENTRY (with or without its window) itself;
    every other record, and every crafted one, must come out as _decode_record makes
    it: the same fields, or refused alike."""
    window = (1000, 66000, 65535, 7, 1, 5000, 70000, 29200, 7, 0)
    v6 = make_key(6, bytes(15) + b"\x01", 40000, bytes(15) + b"\x02", 21)
    records = [sp.encode_entry(CONN, "ESTABLISHED", 2, 12.5),
               sp.encode_entry(CONN, "SYN_SENT", 1, 120.0, "ftp"),
               sp.encode_entry(CONN, "ESTABLISHED", 2, 1.0, None, None, window),
               sp.encode_entry(CONN, "FIN_WAIT", 2, 1.0, "ftp", None, window),
               sp.encode_entry(CONN, "ESTABLISHED", 2, 1.0, None, CONN, window),
               sp.encode_entry(CONN, "ESTABLISHED", 2, 1.0, None, None, None, (7, 1, 7, 0)),
               sp.encode_entry(v6, "ESTABLISHED", 2, 1.0, None, None, window)]
    assert _decoded(sp.decode_records, b"".join(records)) == _one_by_one(b"".join(records))
    crafted = 0
    for rec in records:
        flags_at = 3 + (21 if len(rec) < 3 + 37 else 45) - 1
        for cut in range(len(rec) + 1):  # every truncation, every flags value, bad states
            variants = [rec[:cut]] + [rec[:flags_at] + bytes([v]) + rec[flags_at + 1:]
                                      for v in range(256)] + \
                       [rec[:16] + bytes([v]) + rec[17:] for v in (9, 200)]
            for payload in variants if cut == len(rec) else variants[:1]:
                crafted += 1
                assert _decoded(sp.decode_records, payload) == \
                    _decoded(_one_by_one, payload), payload.hex()
    assert crafted > 1500
