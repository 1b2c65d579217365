"""torchrun entry for the rank-death test: rank 1 dies abruptly at its first optimizer step, then kagglecv runs."""

import os

from kagglecv.cli import main
from kagglecv.training import trainer as train

original_step = train.FoldTrainer._optimizer_step


def dying_step(self):
    if self.runtime.rank == 1 and self.global_step == 0:
        os._exit(7)
    original_step(self)


train.FoldTrainer._optimizer_step = dying_step

if __name__ == "__main__":
    main()
