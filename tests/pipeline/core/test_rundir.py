import os
import subprocess
import sys

import pytest

from pipeline.core.errors import ArtifactError
from pipeline.core.rundir import locked

HOLDER = """
import sys, time
from pipeline.core.rundir import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_is_refused_naming_the_holder_and_takes_over_once_it_died(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ArtifactError, match=rf"in use by another pipeline process \(PID {holder.pid}\)"):
            with locked(tmp_path):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
        holder.wait()
    with locked(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


def test_scratch_directories_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = tmp_path / f".calibrate.tmp-{dead.pid}"
    replacing = tmp_path / "compile" / f".cpu.old-{dead.pid}"
    live = tmp_path / f".score.tmp-{os.getppid()}"  # our parent is running
    for directory in (killed, replacing, live):
        directory.mkdir(parents=True)
        (directory / "partial.bin").write_bytes(b"x")
    (tmp_path / "calibrate").mkdir()
    with locked(tmp_path):
        pass
    assert not killed.exists() and not replacing.exists()
    assert live.is_dir() and (tmp_path / "calibrate").is_dir()
