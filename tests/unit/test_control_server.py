"""The control socket never holds up the node's loop (issue 14), on a real Unix socket."""
import json
import select
import socket

from nodes.engine import OUTSIDE, GatewayEngine
from nodes.rules import RuleSet
from nodes.shell.control import dump_parts
from nodes.shell.control_server import ControlServer
from tests.unit.frames import tcp

RULES = RuleSet.from_text("10.0.0.0/25 10.0.0.192/26 tcp 80 accept")


def engine_with(n: int) -> GatewayEngine:
    fw = GatewayEngine("fw1", RULES)
    for port in range(1, n + 1):
        fw.process(tcp(flags="S", sport=port, dport=80), OUTSIDE, 0.0)
    return fw


def one_round(server, now=0.0):
    """What the node's loop does between two batches of packets."""
    r, w, _ = select.select(server.readers(), server.writers(), [], 0.01)
    for s in r:
        server.readable(s, now)
    for s in w:
        server.writable(s, now)
    server.work(0.0)  # no time to spare: one slice at most


def client(path, command=None):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    if command:
        c.sendall(command.encode() + b"\n")
    c.setblocking(False)
    return c


def read_all(c, server, rounds=2000):
    chunks, loops = [], 0
    for loops in range(rounds):
        one_round(server)
        try:
            data = c.recv(1 << 16)
        except BlockingIOError:
            continue
        if not data:
            return b"".join(chunks), loops
        chunks.append(data)
    raise AssertionError("no end of answer")


def test_a_silent_client_holds_up_nobody(tmp_path):
    fw = engine_with(3)
    path = str(tmp_path / "fw1.sock")
    server = ControlServer(path, lambda cmd: {"answer": cmd}, lambda: dump_parts(fw, 0.0))
    silent = client(path)  # connects, says nothing (it blocked the node for 1 s)
    talker = client(path, "ping")
    answer, _ = read_all(talker, server)
    assert json.loads(answer) == {"answer": "ping"}
    server.expire(100.0)  # and the silent one is closed after IDLE
    assert server.counters["control_timeouts"] == 1 and not server.conns
    silent.close()
    server.close()


def test_a_big_dump_comes_in_slices_with_the_loop_running_between(tmp_path):
    fw = engine_with(3000)
    path = str(tmp_path / "fw1.sock")
    server = ControlServer(path, lambda cmd: {}, lambda: dump_parts(fw, 0.0, size=100))
    answer, loops = read_all(client(path, "dump"), server)
    dump = json.loads(answer)
    assert len(dump["entries"]) == 3000 and dump["node"] == "fw1"
    assert dump["entries"] == fw.dump(0.0)["entries"]  # the same as the whole answer
    assert loops >= 30  # the loop had control back at least once a slice
    server.close()


def test_a_fault_in_an_answer_is_the_clients_error_not_the_nodes_end(tmp_path, capsys):
    # a kernel node's stats raised KeyError on its first call and the node ended with it
    def answer(cmd):
        if cmd == "stats":
            raise KeyError("fw1-eth0")
        return {"answer": cmd}

    def broken_dump():
        yield json.dumps({"node": "fw1"}) + "\n"
        raise RuntimeError("conntrack -L failed")

    path = str(tmp_path / "fw1.sock")
    server = ControlServer(path, answer, broken_dump)
    got, _ = read_all(client(path, "stats"), server)
    assert "KeyError" in json.loads(got)["error"]
    got, _ = read_all(client(path, "dump"), server)
    assert got == b'{"node": "fw1"}\n'  # cut short where it failed
    got, _ = read_all(client(path, "ping"), server)  # and the server goes on
    assert json.loads(got) == {"answer": "ping"}
    assert server.counters["control_faults"] == 2
    assert "conntrack -L failed" in capsys.readouterr().err
    server.close()


def test_an_answer_made_in_slices_lets_the_loop_run_between_and_sends_no_empty_part(tmp_path):
    """``stats`` passes over the whole table (nodes/shell/control.py, stats_parts): at
    200k entries 70 ms at once, and the peers take a node silent for 100 ms for dead.
    Made a slice a round, with empty parts between, the answer arrives whole."""
    def stats_in_slices():
        for _ in range(50):
            yield None  # a slice of the table pass (as table_pass yields): nothing to send
        yield json.dumps({"entries": 200_000})

    path = str(tmp_path / "fw1.sock")
    server = ControlServer(path, lambda cmd: {"at": "once"}, lambda: iter(()),
                           {"stats": stats_in_slices})
    answer, loops = read_all(client(path, "stats"), server)
    assert json.loads(answer) == {"entries": 200_000} and loops >= 50
    assert json.loads(read_all(client(path, "ping"), server)[0]) == {"at": "once"}
    server.close()


def test_members_answers_the_view_and_readiness_without_a_pass_over_the_table():
    """What a runner polls while a node fills its table (topo/net.py, wait_ready): the
    view and whether the node holds its state, never ``stats``' pass over the table."""
    from types import SimpleNamespace

    from nodes.shell.control import answer
    from nodes.sync import SyncEngine
    fw = engine_with(3)
    sync = SyncEngine(1, [1, 2], fw.table, b"k" * 32, boot=1, now=0.0)

    def no_pass(*args, **kw):
        raise AssertionError("members passed over the table")
    sync.table_pass = no_pass
    node = SimpleNamespace(engine=fw, sync=sync, home=None)
    assert answer(node, "members", 0.0) == {"node": "fw1", "alive": [1, 2], "ready": False}
    sync.bulk_waiting.clear()  # its peer answered the bulk request
    assert answer(node, "members", 0.0)["ready"] is True
    assert answer(SimpleNamespace(engine=fw, sync=None, home=None), "members", 0.0) == \
        {"node": "fw1", "alive": None, "ready": True}
