"""Pictures are files: drawing one leaves the matplotlib of a user's own session (a notebook's backend) alone."""

import os
import subprocess
import sys

from PIL import Image

DRAW_CURVES_UNDER_SVG = """
import sys
from pathlib import Path
import matplotlib
from kagglecv.presentation.plots import plot_curves
history = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_accuracy": 0.5 + e / 10}
           for e in range(3)]
plot_curves(history, "accuracy", Path(sys.argv[1]), title="x fold 0")
print(matplotlib.get_backend())
"""


def test_curves_are_drawn_without_switching_the_users_backend(tmp_path):
    done = subprocess.run([sys.executable, "-c", DRAW_CURVES_UNDER_SVG, str(tmp_path / "curves.png")], check=True,
                          capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "svg"})
    assert done.stdout.strip().lower() == "svg"
    with Image.open(tmp_path / "curves.png") as picture:
        assert picture.format == "PNG" and picture.width > 800
