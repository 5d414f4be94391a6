"""The reproduction suite's quick form, as CI runs it: raw data and figures appear.

Checks that experiments 2 and 3 produce what the report is built from; not
their numbers (a quick run has too few repetitions for a verdict).
"""
import json
import subprocess
import sys

import pytest

from tests.integration.conftest import leftovers

pytestmark = pytest.mark.mininet


def test_quick_reproduction_of_experiments_2_and_3_writes_raw_data_figures_and_report(tmp_path):
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "experiments.cli", "reproduce", "--quick",
                           "--only", "e2,e3", "--results", str(results)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "rep 1/2" in done.stdout and "elapsed" in done.stdout  # progress as it goes
    campaign = results / "reproduce-quick"
    for exp, points in (("e2_hold", ["hold-r0", "hold-r1", "nohold-r0", "nohold-r1"]),
                        ("e3_failover", ["none-r0", "ondemand-r0", "ondemand_at_announce-r0"])):
        for point in points:
            folder = campaign / exp / "points" / point
            summary = json.loads((folder / "point.json").read_text())
            assert summary["sessions"] > 0 and "idle_cpu" in summary["fidelity"]
            for raw in ("sessions.jsonl", "stats.json", "raw.json", "events.jsonl",
                        "fw1.events.jsonl", "spec.resolved.json"):
                assert (folder / raw).stat().st_size > 0, f"{exp}/{point}/{raw}"
        for ext in ("png", "pdf"):
            assert (campaign / exp / "figures" / f"{exp}.{ext}").stat().st_size > 1000
    crash = [json.loads(line) for line in
             (campaign / "e3_failover/points/ondemand-r0/events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "fault_crash" for e in crash)
    paused = [json.loads(line) for line in (campaign / "e3_failover/points/"
              "ondemand_at_announce-r0/sessions.jsonl").read_text().splitlines()]
    assert all(r["t_announced"] for r in paused if r["outcome"] == "ok")  # the crash's moment
    report = (campaign / "REPORT.md").read_text()
    assert "## e2_hold" in report and "## e3_failover" in report and "Verdict" in report
    assert list((campaign / "manifests").iterdir())
    # the runner's run id is its own process's: look for any node, shell or bridge
    assert [x for x in leftovers("") if not x.startswith("folder")] == []

    # make figures: the figures and the report again from the raw data alone
    for fig in (campaign / "e2_hold" / "figures").iterdir():
        fig.unlink()
    (campaign / "REPORT.md").unlink()
    again = subprocess.run([sys.executable, "-m", "experiments.cli", "figures", "--results",
                            str(results)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert (campaign / "e2_hold" / "figures" / "e2_hold.png").exists()
    assert (campaign / "REPORT.md").exists()


def test_a_reproduction_stopped_by_sigterm_takes_its_cluster_down(tmp_path):
    """A batch scheduler ends a job at its time limit with SIGTERM: the point's
    cluster must go with it (it was left running: controller, nodes, bridges), and
    the interrupted point must not count as done."""
    import signal
    import time
    results = tmp_path / "results"
    log = open(tmp_path / "out.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", "reproduce", "--quick",
                             "--only", "e3", "--results", str(results)],
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while "running 12 FTP sessions" not in (tmp_path / "out.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "out.log").read_text()[-2000:]
            time.sleep(0.1)
        assert [x for x in leftovers("") if x.startswith("bridge")]  # a cluster is up
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 128 + signal.SIGTERM, (tmp_path / "out.log").read_text()[-2000:]
    assert [x for x in leftovers("") if not x.startswith("folder")] == []
    points = list((results / "reproduce-quick" / "e3_failover" / "points").iterdir())
    assert points and not any((p / "point.json").exists() for p in points)
