"""TCP window tracking, after Linux's ``nf_conntrack_proto_tcp`` (``tcp_in_window``).

Each direction of a connection keeps what Linux keeps in ``ip_ct_tcp_state``
(Guido van Rooij's "Real Stateful TCP Packet Filtering in IP Filter", with
RFC 793's bounds)::

    end     highest seq + len seen from this sender
    maxend  highest ack + window seen from the receiver: the right edge this
            sender may send up to
    maxwin  largest window (scaled) this sender advertised
    scale   this sender's window scale (RFC 7323, from its SYN)

and a segment passes when

    I.   seq <= sender.maxend                      (not past the receiver's window)
    II.  seq + len >= sender.end - receiver.maxwin (not data acknowledged long ago)
    III. sack <= receiver.end                      (acknowledges nothing unseen)
    IV.  sack >= receiver.end - MAXACKWINDOW       (not an ack from long ago)

where ``sack`` is the highest right edge of a SACK block, or the ack. A segment
that fails I or III is INVALID (dropped: ``tcp_out_of_window``); one that fails
II or IV, or overshoots I by less than a window, is IGNORED, as Linux does since
5.18: passed, but it changes no state. ``liberal`` (Linux's
``nf_conntrack_tcp_be_liberal``, or a direction's BE_LIBERAL flag) passes
every segment; a direction whose ``maxwin`` is 0 has not been seen yet and
learns its window from its first segment (a connection picked up mid-stream).

Pure: integers in, a verdict out; sequence numbers compare modulo 2**32.
"""
from __future__ import annotations

from nodes.conntrack import SYN_RECV, SYN_SENT

# Flags of one direction, with Linux's values (IP_CT_TCP_FLAG_*). DATA_UNACKNOWLEDGED
# (0x10), which Linux keeps for its "unacknowledged" timeout, is not kept here: the
# testbed has no such timeout, and the flag would cost every segment two updates.
# Nor is Linux's max ack (and its MAXACK_SET, 0x20): no check reads it.
WINDOW_SCALE, SACK_PERM, CLOSE_INIT, BE_LIBERAL = 0x01, 0x02, 0x04, 0x08
MAX_WSCALE = 14
MAXACKWINCONST = 66000  # Linux's lower bound of MAXACKWINDOW
ACCEPT, IGNORE, INVALID = 0, 1, 2
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
_OPENING = (SYN_SENT, SYN_RECV)  # a connection's states in which SYNs may come again
_M, _H = 0xFFFFFFFF, 0x7FFFFFFF


class Seen:
    """One direction's window state (Linux's ``ip_ct_tcp_state``)."""

    __slots__ = ("end", "maxend", "maxwin", "scale", "flags")

    def __init__(self, end: int = 0, maxend: int = 0, maxwin: int = 0, scale: int = 0,
                 flags: int = 0):
        self.end, self.maxend, self.maxwin, self.scale, self.flags = \
            end, maxend, maxwin, scale, flags

    def fields(self) -> tuple:
        return (self.end, self.maxend, self.maxwin, self.scale, self.flags)

    def as_dict(self) -> dict:
        return dict(zip(self.__slots__, self.fields()))

    def __repr__(self) -> str:
        return "Seen(%d, %d, %d, %d, %#x)" % self.fields()


def before(a: int, b: int) -> bool:
    """``a`` comes before ``b`` in sequence space (Linux's ``before``)."""
    return (a - b) & _M > _H


def _walk(frame: bytes, start: int, end: int):
    """(kind, offset, size) of each option from ``start`` to ``end``, as Linux walks
    them: it stops at the end-of-options kind, a "silly" size or a partial option."""
    i = start
    while i < end:
        kind = frame[i]
        if kind == 0:
            return
        if kind == 1:  # no operation
            i += 1
            continue
        if i + 1 >= end:
            return
        size = frame[i + 1]
        if size < 2 or i + size > end:
            return
        yield kind, i, size
        i += size


def options(frame: bytes, start: int, end: int) -> tuple[int, int]:
    """The window scale and the WINDOW_SCALE / SACK_PERM flags a SYN's options give."""
    scale, flags = 0, 0
    for kind, i, size in _walk(frame, start, end):
        if kind == 4 and size == 2:
            flags |= SACK_PERM
        elif kind == 3 and size == 3:
            scale = min(frame[i + 2], MAX_WSCALE)
            flags |= WINDOW_SCALE
    return scale, flags


def highest_sack(frame: bytes, start: int, end: int, ack: int) -> int:
    """The highest right edge of the SACK blocks in the options, or ``ack``."""
    for kind, i, size in _walk(frame, start, end):
        if kind == 5 and size >= 10 and (size - 2) % 8 == 0:
            for j in range(i + 2, i + size, 8):
                right = int.from_bytes(frame[j + 4:j + 8], "big")
                if before(ack, right):
                    ack = right
            break
    return ack


def init_sender(sender: Seen, receiver: Seen, end: int, win: int, scale: int, flags: int,
                reply: bool) -> None:
    """A SYN (or SYN/ACK) sets up its sender's direction."""
    sender.end = sender.maxend = end
    sender.maxwin = win or 1
    sender.scale = scale
    sender.flags = (sender.flags & BE_LIBERAL) | flags
    # RFC 7323: both ends must offer window scaling for either to use it
    if reply and not (sender.flags & receiver.flags & WINDOW_SCALE):
        sender.scale = receiver.scale = 0


def check(seen: list, direction: int, pkt, frame: bytes, state: str, liberal: bool) -> int:
    """Check a parsed segment (nodes.packet.Packet) of a connection in TCP ``state``
    against the window and update it: ACCEPT, IGNORE or INVALID (IGNORE and INVALID
    change nothing).

    Most segments are an established connection's, with ACK and neither SYN nor
    RST, both directions seen and inside every bound: they are checked and the
    window updated here, with plain comparisons where they give ``before``'s answer
    and 2**32 - 1 and 2**31 - 1 as literals (this runs for every TCP segment); any
    other goes through ``in_window``, Linux's whole procedure."""
    flags = pkt.flags
    sender, receiver = seen[direction], seen[direction ^ 1]
    s_maxwin, r_maxwin = sender.maxwin, receiver.maxwin
    seq, ack, off = pkt.seq, pkt.ack, pkt.payload_off
    opts = pkt.l4 + 20
    sack = ack
    if off > opts and receiver.flags & SACK_PERM and not (
            off - opts == 12 and frame[opts + 2] == 8):  # NOP NOP TIMESTAMP: no room for SACK
        sack = highest_sack(frame, opts, off, ack)
    if (flags & 0x16 != _ACK or not 0 < s_maxwin <= 0x7FFFFFFF  # SYN, RST or no ACK: 0x16;
            or not 0 < r_maxwin <= 0x7FFFFFFF):  # or a direction unseen, or a window past 2**31
        end = (seq + pkt.payload_end - off + (flags & 0x01) + (flags & _SYN and 1)) & _M
        return in_window(seen, direction, seq, ack, end, pkt.window, flags, sack,
                         state in _OPENING, options(frame, opts, off) if flags & _SYN else None,
                         liberal)
    # I-IV as plain comparisons of differences, each within 2**31: where they all hold,
    # the modular ones do too (a window below 2**31 keeps IV's span in range); where one
    # does not (a failing segment, or one across 2**32), the modular procedure decides.
    # Python's integers above 2**30 cost an allocation an operation, and the sequence
    # numbers mostly are: one subtraction a bound, whose difference is small, made the
    # check a third faster than masking each (1.06 -> 0.71 us inside the engine).
    size = pkt.payload_end - off + (flags & 0x01)  # end = seq + size
    ahead = sender.maxend - seq  # I: seq <= maxend
    gained = seq - sender.end + size  # end - sender.end
    unacked = receiver.end - sack  # III: sack <= r.end; IV: sack >= r.end - MAXACKWINDOW
    if not (0 <= ahead <= 0x7FFFFFFF
            and 0 <= unacked <= (s_maxwin if s_maxwin > MAXACKWINCONST else MAXACKWINCONST)
            and -r_maxwin <= gained <= 0x7FFFFFFF - r_maxwin):  # II: end >= sender.end - r.maxwin
        return in_window(seen, direction, seq, ack, (seq + size) & _M, pkt.window, flags,
                         sack, state in _OPENING, None, liberal)
    win = pkt.window << sender.scale  # < 2**30: 16 bits, a scale of 14 at most
    if sack != ack:
        swin = win + ((sack - ack) & 0xFFFFFFFF)
        if s_maxwin < swin:
            sender.maxwin = swin
    elif s_maxwin < win:
        sender.maxwin = win
    if gained > 0:  # after(end, sender.end): it lies less than 2**31 - r.maxwin past it
        sender.end = (seq + size) & 0xFFFFFFFF
    if size > ahead:  # after(end, maxend): end - maxend lies in [-2**31 + 1, 2**16 + 1]
        receiver.maxwin = r_maxwin + size - ahead
    right = (sack + win) & 0xFFFFFFFF
    if (right - receiver.maxend) & 0xFFFFFFFF <= 0x7FFFFFFF:  # not before(right, maxend)
        receiver.maxend = right + 1 & 0xFFFFFFFF if win == 0 else right
    return ACCEPT


def in_window(seen: list, direction: int, seq: int, ack: int, end: int, win: int,
              flags: int, sack: int, opening: bool, syn_options: tuple | None,
              liberal: bool) -> int:
    """Linux's ``tcp_in_window``: check one segment against the window and update it.

    ``seen``: both directions' ``Seen``; ``end``: seq + payload length (+1 for SYN,
    FIN); ``sack``: from ``highest_sack`` (``ack`` when the receiver did not permit
    SACK); ``opening``: the connection is in SYN_SENT or SYN_RECV; ``syn_options``:
    (scale, flags) from ``options`` for a SYN. IGNORE and INVALID change nothing."""
    sender, receiver = seen[direction], seen[1 - direction]
    if sender.maxwin == 0:
        if flags & _SYN:
            init_sender(sender, receiver, end, win, *(syn_options or (0, 0)), direction == 1)
            if not flags & _ACK:
                return ACCEPT  # simultaneous open
        else:  # mid-stream: this direction's history is lost; learn it from the segment
            sender.end = end
            sender.maxwin = ((win << sender.scale) & _M) or 1
            sender.maxend = (end + sender.maxwin) & _M
            if receiver.maxwin == 0:
                receiver.end = receiver.maxend = sack  # pass III and IV until it is seen
            elif sack == (receiver.end + 1) & _M:
                receiver.end = sack  # likely the answer to a keepalive
    elif flags & _SYN and opening and before(sender.end, end):
        # a retransmitted SYN with a higher sequence (RFC 793): set the direction up again
        init_sender(sender, receiver, end, win, *(syn_options or (0, 0)), direction == 1)
        if direction == 1 and not flags & _ACK:
            return ACCEPT
    if not flags & _ACK or (flags & _RST and ack == 0):
        ack = sack = receiver.end  # no ack (or a broken stack's RST): take it as fine
    if flags & _RST and seq == 0 and opening:
        seq = end = sender.end  # a RST answering a SYN
    liberal = liberal or sender.flags & BE_LIBERAL
    maxack_window = max(sender.maxwin, MAXACKWINCONST)
    if not before(seq, (sender.maxend + 1) & _M):  # I fails
        overshot = (end - sender.maxend + 1) & _M
        if (receiver.maxwin and before((sender.end - receiver.maxwin - 1) & _M, end)
                and before((receiver.end - maxack_window - 1) & _M, sack)
                and overshot <= receiver.maxwin and before(sack, (receiver.end + 1) & _M)):
            # a TCP that sends a little more than the window allows: note how far it got,
            # so that the acknowledgement of it passes (Linux does the same)
            sender.end = end
            return ACCEPT if liberal else IGNORE
        return ACCEPT if liberal else INVALID
    if not before(sack, (receiver.end + 1) & _M):  # III fails: acks data not seen yet
        return ACCEPT if liberal else INVALID
    if receiver.maxwin and not before((sender.end - receiver.maxwin - 1) & _M, end):
        return ACCEPT if liberal else IGNORE  # II fails: data acknowledged long ago
    if not before((receiver.end - maxack_window - 1) & _M, sack):
        return ACCEPT if liberal else IGNORE  # IV fails: an ack from long ago
    if not flags & _SYN:
        win = (win << sender.scale) & _M
    swin = win + ((sack - ack) & _M)
    if sender.maxwin < swin:
        sender.maxwin = swin
    if before(sender.end, end):
        sender.end = end
    if receiver.maxwin and before(sender.maxend, end):
        receiver.maxwin += (end - sender.maxend) & _M
    right = (sack + win) & _M
    if not before(right, receiver.maxend):  # after(sack + win, maxend - 1)
        receiver.maxend = (right + (win == 0)) & _M
    return ACCEPT


def new_window(end: int, win: int, scale: int, flags: int, mid_stream: bool) -> list:
    """Both directions' state of a connection's first segment, as Linux's ``tcp_new``:
    a SYN sets up the original direction; a segment picked up mid-stream (``loose``)
    learns its window from itself, and both directions are tracked liberally with SACK
    assumed (the window scale of a connection joined late cannot be known)."""
    if not mid_stream:
        return [Seen(end, end, win or 1, scale, flags), Seen()]
    maxwin = win or 1
    both = SACK_PERM | BE_LIBERAL
    return [Seen(end, (end + maxwin) & _M, maxwin, 0, both), Seen(flags=both)]
