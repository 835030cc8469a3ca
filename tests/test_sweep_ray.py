"""dissect sweep --ray on a local Ray cluster started here (2 CPUs): the run folders equal
the one-machine sweep's, also when an actor is killed mid-sweep; an address that does not
answer fails at once. Select them with ``pytest -m ray``; they run wherever Ray is installed
(requirements-dev.txt installs it).

Both sweeps run with one torch thread in this process, as Ray's workers (an actor of half a
CPU, a task of one CPU) do: then every computation, here and on the workers, is the same
sequence of float operations, so the files are compared byte for byte. (With another
thread count here, matrix products round differently in the last bit: labels stay, scores
move by about 1e-6.)"""
from __future__ import annotations

import filecmp
import os
import signal
import socket

import pytest
import torch

from dissect_core.common.errors import InvalidInputError
from dissect_core.engine.sweep import run_sweep

from sweep_setup import FOLDERS, make_sweep_inputs, write_spec

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'clip-dissect-explorer[ray]')")
psutil = pytest.importorskip("psutil")  # comes with Ray
pytestmark = pytest.mark.ray

from dissect_core.engine.ray_sweep import RayEngine  # noqa: E402  (needs ray)

# Files of a run folder that say where and when it was made (paths, time, device, timings).
CIRCUMSTANTIAL = {"manifest.json", "args.txt"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_sweep")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(root / "torch_home"))
        clip = make_sweep_inputs(root)
        torch.set_num_threads(1)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            local = write_spec(root, clip, "local")
            run_sweep(local)
            yield root, clip
        finally:
            ray.shutdown()
            torch.set_num_threads(threads)


def assert_same_runs(root, name):
    for folder in FOLDERS:
        ours, theirs = root / name / folder, root / "local" / folder
        files = sorted(path.relative_to(theirs) for path in theirs.rglob("*") if path.is_file())
        assert sorted(path.relative_to(ours) for path in ours.rglob("*") if path.is_file()) == files
        for path in files:
            if path.name not in CIRCUMSTANTIAL:
                assert filecmp.cmp(ours / path, theirs / path, shallow=False), f"{folder}/{path} differs"


def test_a_ray_sweep_writes_the_runs_of_the_one_machine_sweep(cluster):
    root, clip = cluster
    engine = RayEngine(workers=2)
    result = run_sweep(write_spec(root, clip, "ray"), engine=engine)
    engine.close()
    assert result.computed == FOLDERS
    assert (result.probe_passes, result.images_decoded) == (1, 30)
    assert_same_runs(root, "ray")


def test_killing_an_actor_mid_sweep_gives_the_same_runs(cluster):
    root, clip = cluster
    killed = []

    def kill_an_actor(stage, done, total):
        # After the first recorded batch, SIGKILL one of the actors (a descendant of this process).
        if stage.startswith("probe images") and done > 0 and not killed:
            actors = [process for process in psutil.Process().children(recursive=True)
                      if "_BatchRecorder" in " ".join(process.cmdline())]
            assert actors, "no actor process found"
            os.kill(actors[0].pid, signal.SIGKILL)
            killed.append(actors[0].pid)

    engine = RayEngine(workers=2)
    run_sweep(write_spec(root, clip, "killed"), progress=kill_an_actor, engine=engine)
    engine.close()
    assert killed
    assert_same_runs(root, "killed")


def test_an_address_that_does_not_answer_is_refused_at_once():
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(InvalidInputError, match=f"No Ray cluster answers at ray://127.0.0.1:{port}"):
        RayEngine(f"ray://127.0.0.1:{port}")
