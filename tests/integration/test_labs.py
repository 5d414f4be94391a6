"""Every command of every lab handout (docs/labs/*.md), run as the handout says.

A handout is Markdown. A ```console block whose line is ``$ make cli ...``
starts a cluster; the ```fwcluster blocks after it are typed into that
cluster's CLI (``fwcluster> COMMAND`` lines), and the cluster stops at the
next ``make cli`` or at the end. After a block, HTML comments state what the
handout tells the student they will observe, as regular expressions over
that block's output: ``<!-- expect: REGEX -->`` must match,
``<!-- expect-not: REGEX -->`` must not. Students do not see the comments;
this test holds the handout to them.
"""
import glob
import os
import re
import shutil
import subprocess

import pytest

from tests.integration.conftest import leftovers

pytestmark = pytest.mark.mininet
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HANDOUTS = sorted(p for p in glob.glob(os.path.join(ROOT, "docs", "labs", "*.md"))
                  if not os.path.basename(p).startswith(("README", "answers")))
BLOCK = re.compile(r"```(console|fwcluster)\n(.*?)```((?:\s*<!-- expect(?:-not)?: .*? -->)*)",
                   re.S)
CHECK = re.compile(r"<!-- (expect|expect-not): (.*?) -->")
PROMPT = "fwcluster> "


def sessions(text: str) -> list[dict]:
    """The handout's clusters: the make command, and blocks of (commands, checks)."""
    out = []
    for kind, body, checks in BLOCK.findall(text):
        lines = [l for l in body.splitlines() if l.strip()]
        checks = CHECK.findall(checks)
        if kind == "console":
            assert len(lines) == 1 and lines[0].startswith("$ make cli"), \
                f"a console block holds one '$ make cli ...' line, not {lines}"
            out.append({"make": lines[0][2:], "blocks": [], "checks": checks})
            continue
        assert out, "an fwcluster block comes after a '$ make cli' block"
        assert all(l.startswith(PROMPT) for l in lines), f"every line starts {PROMPT!r}"
        out[-1]["blocks"].append(([l[len(PROMPT):] for l in lines], checks))
    return out


def per_command(output: str) -> list[tuple[str, str]]:
    """The CLI's output cut at each echoed command: (command, what it printed)."""
    parts = []
    for line in output.splitlines():
        if line.startswith(PROMPT):
            parts.append((line[len(PROMPT):], []))
        elif parts:
            parts[-1][1].append(line)
    return [(cmd, "\n".join(lines)) for cmd, lines in parts]


def judge(where: str, text: str, checks: list) -> list[str]:
    wrong = []
    for kind, pattern in checks:
        found = re.search(pattern, text, re.M) is not None
        if found != (kind == "expect"):
            wrong.append(f"{where}: {kind} /{pattern}/ failed on:\n{text}")
    return wrong


def test_there_are_the_handouts_the_labs_need():
    names = [os.path.basename(p) for p in HANDOUTS]
    assert len(names) >= 3 and all(s["blocks"] for p in HANDOUTS
                                   for s in sessions(open(p, encoding="utf-8").read()))
    for path in HANDOUTS:  # each has its answer key, in a file of its own
        key = os.path.join(os.path.dirname(path), "answers", os.path.basename(path))
        assert os.path.exists(key), f"no answer key {key}"


@pytest.mark.parametrize("handout", HANDOUTS, ids=[os.path.basename(p) for p in HANDOUTS])
def test_every_handout_command_does_what_the_handout_says(handout):
    with open(handout, encoding="utf-8") as fh:
        plan = sessions(fh.read())
    before = set(os.listdir(os.path.join(ROOT, "results"))) \
        if os.path.isdir(os.path.join(ROOT, "results")) else set()
    wrong, passed = [], False
    try:
        for n, session in enumerate(plan, 1):
            commands = [c for cmds, _ in session["blocks"] for c in cmds]
            done = subprocess.run(session["make"], shell=True, cwd=ROOT, text=True,
                                  input="\n".join(commands + ["exit"]) + "\n",
                                  capture_output=True, timeout=600)
            assert done.returncode == 0, f"{session['make']}: {done.stderr[-2000:]}"
            wrong += judge(f"cluster {n} start", done.stdout, session["checks"])
            ran = per_command(done.stdout)
            assert [c for c, _ in ran] == commands, \
                f"the CLI did not run every command:\n{done.stdout[-3000:]}"
            i = 0
            for cmds, checks in session["blocks"]:
                text = "\n".join(f"{PROMPT}{c}\n{o}" for c, o in ran[i:i + len(cmds)])
                i += len(cmds)
                wrong += judge(f"cluster {n}, block '{cmds[0]}'", text, checks)
                if not any("\\*\\*\\*" in pattern for _, pattern in checks):
                    assert "*** " not in text, f"a handout command was refused:\n{text}"
        passed = not wrong
    finally:
        kept = []
        for name in set(os.listdir(os.path.join(ROOT, "results"))) - before:
            if name.startswith("cli-"):  # the runs this test made
                path = os.path.join(ROOT, "results", name)
                if passed:
                    shutil.rmtree(path, ignore_errors=True)
                else:  # what a failure needs to be understood: its nodes' events, logs
                    os.rename(path, os.path.join(ROOT, "results", "failed-" + name))
                    kept.append("results/failed-" + name)
    assert not wrong, "\n\n".join(wrong) + f"\n\nrun folders kept: {', '.join(kept)}"
    assert leftovers("none") == []
