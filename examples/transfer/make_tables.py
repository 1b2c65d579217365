"""Make the two tables of the transfer example from cifar10-mini, without copying an image.

``data/cifar8/train.csv``: the eight classes that are neither cat nor dog (the pretraining set).
``data/catdog/train.csv``: cats and dogs only (the binary fine-tuning task), so no image of the fine-tuning task
is seen in pretraining.
"""

import sys
from pathlib import Path

import pandas as pd

source = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/cifar10-mini/train.csv")
table = pd.read_csv(source, dtype=str)
is_pet = table["label"].isin(["cat", "dog"])
for name, rows in (("cifar8", table[~is_pet]), ("catdog", table[is_pet])):
    folder = Path("data") / name
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_csv(folder / "train.csv", index=False)
    print(f"{folder / 'train.csv'}: {len(rows)} rows, classes {sorted(rows['label'].unique())}")
