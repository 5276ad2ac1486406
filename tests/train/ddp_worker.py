"""Run by test_trainer.py under ``python -m torch.distributed.run``: a few meta-learning steps of
the reduced model on the sample identity, written to the run folder given on the command line.

argv: data_dir run_dir index_path batch_size steps
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: make `tests` importable


def main() -> None:
    data, run, index, batch_size, steps = sys.argv[1:6]
    torch.set_num_threads(1)
    from tests.train.helpers import tiny_loss_networks, tiny_meta_config
    from thead.config import LSRConfig
    from thead.train import train

    train(
        tiny_meta_config(batch_size=int(batch_size)),
        data=data,
        out=run,
        model_config=LSRConfig.reduced(),
        loss_networks=tiny_loss_networks(),
        steps=int(steps),
        index_path=index,
        device="cpu",
    )


if __name__ == "__main__":
    main()
