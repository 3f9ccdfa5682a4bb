"""DistributedDataParallel: two Gloo processes under torchrun train one identical model.

Each rank records the indices its `DistributedSampler` hands the training loader (a spy
on ``DistributedSampler.__iter__`` that returns the same indices), so the tests can check
that the ranks split every epoch into disjoint shards instead of training on the same data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datadir_factory import make_data_dir

from dsnet.data.contract import load_data_dir
from dsnet.data.split import split_patients, write_split

REPO = Path(__file__).resolve().parents[1]

# Runs on every rank under torchrun: trains, then saves this rank's final weights and the
# image ids its sampler drew in each epoch.
WORKER = """
import json, os, sys
from pathlib import Path
import torch
from torch.utils.data import DistributedSampler
from dsnet.core.config import load_params
from dsnet.training.train import train

drawn = []
draw = DistributedSampler.__iter__

def recording_draw(sampler):
    indices = list(draw(sampler))
    ids = [sampler.dataset.entries[i].image_id for i in indices]
    drawn.append({"epoch": sampler.epoch, "rank": sampler.rank, "image_ids": ids})
    return iter(indices)

DistributedSampler.__iter__ = recording_draw
data, split, root, params_file, *overrides = sys.argv[1:]
rank = int(os.environ["RANK"])
root = Path(root)
result = train(data, split, root / f"out{rank}", load_params([params_file], overrides),
               plots_dir=root / f"plots{rank}")
torch.save(result.model.state_dict(), root / f"weights{rank}.pt")
(root / f"drawn{rank}.json").write_text(json.dumps(drawn))
"""

OVERRIDES = [
    "model.backbone=mobilenet_v3",
    "model.attention=ds",
    "preprocess.spacing_mm=1.5",
    "preprocess.canvas_px=64",
    "train.device=cpu",
    "train.epochs=2",
    "train.batch_size=2",
    "train.workers=0",
    "train.threads=1",
    "train.warmup_iters=2",
]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    t_scores = {f"P{i}": {"L1": -0.8 * i, "L2": -0.8 * i - 0.5} for i in range(1, 5)}
    data = make_data_dir(root / "data", t_scores, size=(64, 64), spacing=(1.5, 1.5), seed=2)
    split = write_split(split_patients(load_data_dir(data), 0.25, seed=0), root / "split.json")
    worker = root / "worker.py"
    worker.write_text(WORKER)
    env = {
        **os.environ,
        "DSNET_TRACKING": "on",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(worker), str(data), str(split), str(root), str(REPO / "params.yaml"), *OVERRIDES,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_both_ranks_end_with_identical_weights_equal_to_model_pt(ddp_run):
    root, _ = ddp_run
    rank0 = torch.load(root / "weights0.pt", weights_only=True)
    rank1 = torch.load(root / "weights1.pt", weights_only=True)
    saved = torch.load(root / "out0" / "model.pt", weights_only=True)["state_dict"]
    assert rank0.keys() == rank1.keys() == saved.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.equal(rank0[key], saved[key]), key
    initial = torch.load(root / "out0" / "last.ckpt", weights_only=True)
    assert initial["epoch"] == 2


def test_ranks_draw_disjoint_shards_that_cover_each_epoch(ddp_run):
    root, _ = ddp_run
    data = load_data_dir(root / "data")
    split = json.loads((root / "split.json").read_text())
    train_ids = sorted(image["id"] for image in data.images_of(split["train"]))
    assert len(train_ids) == 4  # even: DistributedSampler pads an odd count with repeats
    drawn = [json.loads((root / f"drawn{rank}.json").read_text()) for rank in (0, 1)]
    for rank, epochs in enumerate(drawn):
        assert [(e["epoch"], e["rank"]) for e in epochs] == [(1, rank), (2, rank)], drawn
    shards = [(drawn[0][e]["image_ids"], drawn[1][e]["image_ids"]) for e in (0, 1)]
    for shard0, shard1 in shards:
        assert len(shard0) == len(shard1) == 2, shards
        assert not set(shard0) & set(shard1), shards
        assert sorted(shard0 + shard1) == train_ids, shards
    assert shards[0] != shards[1]  # set_epoch reshuffles: epoch 2 is drawn anew


def test_only_rank_0_writes_and_logs(ddp_run):
    import mlflow

    root, result = ddp_run
    assert sorted(p.name for p in (root / "out0").iterdir()) == [
        "last.ckpt",
        "model.pt",
        "train_run.json",
    ]
    assert [p.name for p in (root / "plots0").iterdir()] == ["train_loss.csv"]
    assert not (root / "out1").exists()
    assert not (root / "plots1").exists()
    record = json.loads((root / "out0" / "train_run.json").read_text())
    assert record["world_size"] == 2
    assert (result.stdout + result.stderr).count("wrote ") == 1  # one progress log

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [record["run_id"]]
    assert runs[0].info.status == "FINISHED"
