"""DDP on CPU: `torchrun --nproc_per_node=2` with gloo trains one run with identical replicas."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import textwrap

import torch

from dualtrack.models import create_model

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    from dualtrack.training import prepare_run, train

    run_dir, out, *overrides = sys.argv[1:]
    result = train(prepare_run("tiny_global", overrides)[0], run_dir)
    torch.save(result.model.state_dict(), os.path.join(out, f"rank{os.environ['RANK']}.pt"))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_training(tiny_dataset, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}", str(script), str(run_dir), str(out),
        f"data.root={tiny_dataset}", "runtime.device=cpu", "runtime.tensorboard=false", "optim.epochs=2",
        "runtime.val_every=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    a = torch.load(out / "rank0.pt", weights_only=True)
    b = torch.load(out / "rank1.pt", weights_only=True)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    torch.manual_seed(0)
    initial = create_model("global_only_tiny").state_dict()
    assert any(not torch.equal(a[k], initial[k]) for k in a if k.startswith("global_encoder."))

    # one run directory, written once: 4 training scans over 2 processes with batch 2 = 1 step per epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp_train.py", "out", "run"]
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows if r["train_loss"]] == [1, 2]
    assert len([r for r in rows if r["val_GPE"]]) == 2
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert last["state"]["samples_seen"] == 8
    assert all(torch.equal(last["model"][k], a[k]) for k in a)
