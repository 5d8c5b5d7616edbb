"""Draw the test accuracy per epoch of every shipped weight file's run, by family.

Each model card names the run that made its weights (``--out runs/...`` in its
command); this script reads that run's ``metrics.json`` and draws one figure
per model family: MNIST on the left, Fashion-MNIST on the right, one line per
preset. The figures in ``docs/img/`` come from it.

Run (after the runs of the cards, see docs/pretrained.md):
    python examples/family_curves.py                 # into docs/img/
    python examples/family_curves.py --out figures   # elsewhere
    python examples/family_curves.py --family ViT    # one family's figure
"""

import argparse
import json
import pathlib
import shlex
import sys
from collections.abc import Sequence

import zoo

DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
REPO = pathlib.Path(__file__).resolve().parent.parent


def run_dir(card: zoo.models.ModelCard) -> pathlib.Path:
    """The ``--out`` folder of the card's command, relative to the repository."""
    words = shlex.split(card.command)
    return REPO / words[words.index("--out") + 1]


def accuracy_history(card: zoo.models.ModelCard) -> list[dict[str, float]]:
    """One record per epoch: ``{"epoch": e, "<preset>_accuracy": test accuracy}``."""
    path = run_dir(card) / "metrics.json"
    try:
        epochs = json.loads(path.read_text())["epochs"]
    except FileNotFoundError:
        sys.exit(f"error: {path} is missing; run the card's command first:\n"
                 f"  {card.command}")  # fmt: skip
    return [
        {"epoch": record["epoch"], f"{card.preset}_accuracy": record["test_accuracy"]}
        for record in epochs
    ]


def merged(histories: Sequence[list[dict[str, float]]]) -> list[dict[str, float]]:
    """The histories as one, epoch by epoch (``plot_curves`` skips missing keys)."""
    by_epoch: dict[float, dict[str, float]] = {}
    for history in histories:
        for record in history:
            by_epoch.setdefault(record["epoch"], {}).update(record)
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _card_or_none(name: str, dataset: str) -> zoo.models.ModelCard | None:
    """The card of ``name`` on ``dataset``, or ``None`` where it has no weights."""
    try:
        return zoo.model_card(name, dataset)
    except ValueError:
        return None


def main(argv: Sequence[str] | None = None) -> list[pathlib.Path]:
    """Write ``<family>_curves.png`` for every family with weights; return paths."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "docs" / "img")
    parser.add_argument(
        "--family", default=None, help="only this family's figure, e.g. ViT"
    )
    args = parser.parse_args(argv)
    from matplotlib.figure import Figure  # the plot extra

    cards = [
        card
        for name in zoo.list_models(pretrained=True)
        for dataset in DATASETS
        if (card := _card_or_none(name, dataset)) is not None
    ]
    families: dict[str, list[zoo.models.ModelCard]] = {}
    for card in cards:
        if args.family in (None, card.config["family"]):
            families.setdefault(card.config["family"], []).append(card)
    if not families:
        sys.exit(f"error: no shipped weights of a family named {args.family!r}")
    written = []
    for family, members in families.items():
        figure = Figure(figsize=(10, 4), layout="constrained")
        panels = zip(figure.subplots(1, 2), DATASETS.items(), strict=True)
        for ax, (dataset, title) in panels:
            runs = [accuracy_history(c) for c in members if c.dataset == dataset]
            if not runs:
                ax.set_axis_off()
                continue
            zoo.plot.plot_curves(merged(runs), "accuracy", ax=ax, title=title)
            ax.set_ylabel("test accuracy")
            ax.set_ylim(bottom=max(ax.get_ylim()[0], 0.8))  # cut the first epochs
        path = zoo.plot.save_png(figure, args.out / f"{family.lower()}_curves.png")
        print(f"wrote {path}")
        written.append(path)
    return written


if __name__ == "__main__":
    main()
