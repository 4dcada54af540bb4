"""A real training process killed with SIGKILL mid-epoch, after a refinement round, resumes exactly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "resumable_run.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(output_dir, *extra, env=None):
    result = subprocess.run(
        [sys.executable, SCRIPT, str(output_dir), *extra], env=env or ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((output_dir / "losses.json").read_text())


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    reference = run(tmp_path / "reference")

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, SCRIPT, str(killed_dir)],
        env={**ENV, "MARS_TEST_STEP_SLEEP": "0.4"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Step 9 is mid-epoch 1 (5 steps per epoch), after the first refinement round at the start of epoch 1.
    marker = killed_dir / "checkpoint-9" / "trainer_state.json"
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), "the run never wrote checkpoint-9"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not (killed_dir / "losses.json").exists()  # it really died before finishing

    state = json.loads((killed_dir / "checkpoint-9" / "mars_state.json").read_text())
    assert state["scalars"]["refiner"]["segment_sizes"] == [16]

    resumed = run(killed_dir, "resume")
    # Whichever complete checkpoint is newest (9, or 12 if it was written before the kill), the steps after it must
    # replay the uninterrupted run; the restored history covers the steps before it.
    tail = {step: loss for step, loss in resumed if step > 9}
    expected = {step: loss for step, loss in reference if step > 9}
    assert sorted(tail) == sorted(expected) == list(range(10, 16))
    for step in expected:
        assert tail[step] == pytest.approx(expected[step], rel=1e-5), step
    assert (killed_dir / "pool.jsonl").read_bytes() == (tmp_path / "reference" / "pool.jsonl").read_bytes()
