"""Two real processes under `accelerate launch` (gloo, CPU): every rank must agree on MARS's state."""

import json
import os
import socket
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "distributed_run.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["full", "online"])
def test_two_processes_agree(tmp_path, source):
    # `--multi_gpu` selects accelerate's torchrun launcher; with no GPU and `use_cpu=True` the processes join a gloo
    # group (accelerate's `--cpu` flag would start a single process unless MPI is installed).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        SCRIPT,
        str(tmp_path),
        source,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    a, b = ranks
    # The same augmented pool, byte for byte, on every process: two rounds of 16 variants on top of 40 pairs.
    assert a["pool_size"] == b["pool_size"] == 40 + 2 * 16
    assert a["pool_sha"] == b["pool_sha"]
    # Same margins, weights, and index sequence on every process.
    assert a["margins"] == b["margins"] and a["weights"] == b["weights"]
    assert a["sequences"] == b["sequences"] and set(a["sequences"]) == {"1", "2"}
    # Scoring is sharded, not duplicated: in every pass the ranks score disjoint sequences that together cover
    # every sequence of the pairs logged as scored.
    counts = [int(e["mars/pairs_scored"]) for e in a["refreshes"]]
    assert counts == [int(e["mars/pairs_scored"]) for e in b["refreshes"]]
    passes = [n for n in counts if n]  # a refresh with nothing stale runs no pass
    assert len(a["scored_slots"]) == len(b["scored_slots"]) == len(passes)
    for n, mine, theirs in zip(passes, a["scored_slots"], b["scored_slots"]):
        assert mine and theirs and not set(mine) & set(theirs)
        assert sorted(mine + theirs) == list(range(2 * n))
    # Each epoch, the ranks see disjoint batches that together are that epoch's global sequence (40 pairs,
    # global batch 2 x 4).
    for epoch in ("1", "2"):
        seq = a["sequences"][epoch]
        mine = [[batch for e, batch in r["seen"] if str(e) == epoch] for r in ranks]
        global_batches = [seq[i : i + 4] for i in range(0, len(seq), 4)]
        if epoch == "2":
            assert max(seq) >= 40  # augmented pairs are sampled
        assert mine[0] == global_batches[0::2] and mine[1] == global_batches[1::2]
    # The same model on every process at the end.
    assert a["params_sha"] == b["params_sha"]
