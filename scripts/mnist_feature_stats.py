"""Write the MNIST test set's features and their statistics, the reference of ddpm_tutor.evaluation.

    DDPM_TUTOR_DATA=<folder with the MNIST .gz files> python scripts/mnist_feature_stats.py
    DDPM_TUTOR_DATA=<data folder> python scripts/mnist_feature_stats.py --dataset fashion-mnist

Runs the shipped classifier's feature map (:class:`ddpm_tutor.evaluation.ClassifierFeatures`, the
penultimate layer) over the 10,000 test digits and writes, each atomically (temp file + ``os.replace``):

* ``ddpm_tutor/weights/mnist_test_features.pt``: ``features`` (10000, 128) float16, their ``mean``
  (128,) and ``cov`` (128, 128) in float64, computed from the stored float16 values so that the
  statistics and the features agree exactly, and the test ``labels``;
* ``ddpm_tutor/weights/mnist_test_features.json``: the file's sha256, the classifier's sha256 (the
  features go stale when the classifier changes), the command and torch version.

Deterministic: no randomness; the same classifier and torch build give the same file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from ddpm_tutor.datasets import load_dataset
from ddpm_tutor.evaluation import ClassifierFeatures, _stats_path, features, reference_from_features
from ddpm_tutor.metrics import classifier_path


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; shipped files must be readable
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist",
                        help="whose test set, with that dataset's shipped classifier (default mnist)")
    parser.add_argument("--out", type=Path, default=None, help="the .pt to write (its .json goes beside it; "
                        "default: the shipped file of --dataset)")
    parser.add_argument("--data", default=None, help="folder with the MNIST files (default: $DDPM_TUTOR_DATA or the cache)")
    args = parser.parse_args()

    args.out = _stats_path(args.dataset) if args.out is None else args.out
    images, labels = load_dataset(args.dataset, "test", root=args.data)  # (10000, 1, 28, 28) uint8
    feats = features(images, ClassifierFeatures(dataset=args.dataset))  # (10000, 128) float64
    stats = reference_from_features(feats, labels)
    atomic_write(args.out, lambda tmp: torch.save(stats, tmp))
    meta = {
        "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
        "classifier_sha256": json.loads(classifier_path(args.dataset).with_suffix(".json").read_text())["sha256"],
        "features": ("MNIST" if args.dataset == "mnist" else args.dataset) + " classifier penultimate layer (fc1, before its ReLU), float16; mean and cov (n - 1) in float64",
        "n": int(stats["features"].shape[0]),
        "dims": int(stats["features"].shape[1]),
        "command": "DDPM_TUTOR_DATA=<folder with the MNIST .gz files> python scripts/mnist_feature_stats.py"
        if args.dataset == "mnist" else
        f"DDPM_TUTOR_DATA=<folder with a {args.dataset}/ subfolder> python scripts/mnist_feature_stats.py "
        f"--dataset {args.dataset}",
        "torch_version": torch.__version__,
    }
    atomic_write(args.out.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
