from experiments import fidelity


def test_idle_share_from_two_samples():
    assert fidelity.idle_share((100.0, 400.0), (150.0, 600.0)) == 0.25
    assert fidelity.idle_share((1.0, 1.0), (1.0, 1.0)) is None


def test_cpu_times_reads_this_machine():
    idle, total, steal = fidelity.cpu_times()
    assert 0 < idle <= total and 0 <= steal <= total


def test_steal_is_the_hosts_share_between_two_readings(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    start = fidelity.cpu_times(str(stat))
    assert start == (810.0, 1000.0, 35.0)
    stat.write_text("cpu  200 0 50 1300 10 0 5 135 0 0\n")  # 700 jiffies later, 100 stolen
    end = fidelity.cpu_times(str(stat))
    assert fidelity.steal_share(start, end) == 100 / 700
    assert fidelity.idle_share(start, end) == 500 / 700
    assert fidelity.judge(0.5, {}, {}, steal=0.14) == [
        "the host took 14% of the CPU (steal > 5%) while the traffic ran"]
    assert fidelity.judge(0.5, {}, {}, steal=0.01) == []


def test_judge_flags_what_made_the_emulator_the_bottleneck():
    assert fidelity.judge(0.5, {"s1": 0}, {"fw1": 0}) == []
    flags = fidelity.judge(0.05, {"s1": 3, "s2": 0}, {"fw2": 7})
    assert flags == ["CPU 5% idle (< 10%) while the traffic ran", "switch s1 dropped 3 packets",
                     "node fw2 lost 7 packets in its own I/O"]


def test_node_drops_counts_io_losses_not_firewall_drops():
    stats = {"tx_errors": {"outside": 2, "inside": 1}, "rx_truncated": 1,
             "rx_dropped": {"outside": 5, "inside": 0},
             "drops": {"policy": 99}, "sync": {"counters": {"send_errors": 4}}}
    assert fidelity.node_drops(stats) == 13
    assert fidelity.node_drops({"error": "no answer"}) == 0


def test_port_drops_leave_out_the_bridge_port():
    text = """OFPST_PORT reply (OF1.3) (xid=0x2): 3 ports
  port  4: rx pkts=4, bytes=216, drop=2, errs=0, frame=0, over=0, crc=0
           tx pkts=34, bytes=2884, drop=1, errs=0, coll=0
           duration=0.483s
  port LOCAL: rx pkts=0, bytes=0, drop=0, errs=0, frame=0, over=0, crc=0
           tx pkts=0, bytes=0, drop=35, errs=0, coll=0
           duration=0.520s
  port  1: rx pkts=84, bytes=7599, drop=0, errs=0, frame=0, over=0, crc=0
           tx pkts=50, bytes=4608, drop=5, errs=0, coll=0
"""
    assert fidelity.port_drops(text) == 8


def test_bridge_drops_sum_the_ports_of_a_kernel_bridge(tmp_path):
    for port, rx, tx in (("fw1-eth2", 3, 0), ("fw2-eth2", 0, 4)):
        (tmp_path / "s3" / "brif" / port).mkdir(parents=True)
        stats = tmp_path / port / "statistics"
        stats.mkdir(parents=True)
        (stats / "rx_dropped").write_text(f"{rx}\n")
        (stats / "tx_dropped").write_text(f"{tx}\n")
    assert fidelity.bridge_drops("s3", str(tmp_path)) == 7
