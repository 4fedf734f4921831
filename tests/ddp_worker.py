"""Run under torchrun by tests/test_train.py: train a few DDP steps on CPU (gloo), then save
this rank's weights so the test can check that every rank holds the same model."""

import os
import sys

import torch

from musicrnn.config import TrainConfig
from musicrnn.train import train

data, run, out = sys.argv[1:4]
cfg = TrainConfig.from_dict(dict(hidden=32, embedding=16, layers=1, batch_size=4, seq_len=16, max_steps=5, eval_every=5,
                  device="cpu", threads=1, warmup_steps=1, dropout=0.1))
result = train(data, run, cfg)
torch.save({k: v.detach().clone() for k, v in result.model.state_dict().items()},
           os.path.join(out, f"rank{os.environ['RANK']}.pt"))
