"""Re-make shipped weights from their cards' commands and check they come out the same.

For each card named (``mlp-mnist``, ...; by default the cards in ``QUICK``, which
retrain in under about 3 minutes on 2 CPU cores), this runs the card's own
``command`` (``examples/mnist.py``) with ``--out`` in a temporary folder and
``--data-dir`` from ``$ZOO_DATA_DIR``, publishes the run with
``examples/publish_weights.py`` into a temporary weights folder, and compares
the new card with the shipped one:

- on a CPU of the card's kind (its ``provenance`` names this CPU model and
  instruction-set flags), the weight file's SHA-256 must be equal;
- on another CPU, or for a card that records none, XLA may round float32 sums
  otherwise, and a whole training run drifts from those roundings: the new
  ``test_correct`` must be within the card's ``correct_tolerance``, or within
  ``OTHER_CPU_SHARE`` of the test set (a recipe that still learns what it
  learned), and the line says which.

It prints one line per card (``equal``, ``within tolerance`` or ``FAILED``, with
both figures, the seconds it took, and what differs from the card's provenance
where something does) and exits with status 1 if any card failed. A card
that fails on a CPU of its kind is stale: the code's numerics changed since
it was made. Re-make it (its command, then publish_weights.py) in the same
change.

Run:
    python examples/reproduce.py                  # the quick cards
    python examples/reproduce.py mlp-mnist cnn-mnist
    python examples/reproduce.py --all            # every card (hours: ResNets)
"""

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence

import publish_weights

import zoo

EXAMPLES = pathlib.Path(__file__).resolve().parent
QUICK = ("mlp-mnist", "stax_cnn-mnist", "lenet5-mnist")
"""The cards that retrain in under about 3 minutes on 2 cores (what CI runs)."""
OTHER_CPU_SHARE = 0.005
"""On another kind of CPU a retrained card must come within this share of its
test set (50 of 10,000 images): float32 rounding drifts over a whole run, so
only a CPU of the card's kind can check it bit for bit."""
TRAINER = ["python", "examples/mnist.py"]
"""How every card's command starts."""
# What makes two runs of one command agree bit for bit: the card's provenance.
KIND = ("cpu", "cpu_flags")
VERSIONS = ("jax", "jaxlib", "zoo_commit", "xla_flags")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a re-made card compares with the shipped one."""

    name: str
    verdict: str
    """``"equal"``, ``"within tolerance"`` or ``"FAILED"``."""
    line: str
    """One line that says so, with both figures."""

    @property
    def failed(self) -> bool:
        return self.verdict == "FAILED"


def read_card(path: pathlib.Path) -> zoo.models.ModelCard:
    """The card at ``path``, checked."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return zoo.models.ModelCard.from_json(data, source=f"The model card {path}")


def rerun_args(command: str, out: pathlib.Path, data_dir: str | None) -> list[str]:
    """The card's ``command`` as arguments of mnist.py, writing to ``out``.

    Raises:
        ValueError: the command is not ``python examples/mnist.py ...``.
    """
    words = shlex.split(command)
    if words[:2] != TRAINER:
        raise ValueError(f"the card's command is not {shlex.join(TRAINER)}: {command}")
    args, rest = [], words[2:]
    while rest:
        word = rest.pop(0)
        if word == "--out" and rest:
            rest.pop(0)
        elif not word.startswith("--out="):
            args.append(word)
    args += ["--out", str(out), "--no-progress"]
    return args + (["--data-dir", data_dir] if data_dir else [])


def compare(
    shipped: zoo.models.ModelCard,
    made: zoo.models.ModelCard,
    here: Mapping[str, str],
    seconds: float,
) -> Outcome:
    """The verdict on ``made`` (re-made on a machine with provenance ``here``)."""
    name = f"{shipped.preset}-{shipped.dataset}"
    figures = (
        f"{made.test_correct} correct against the card's {shipped.test_correct} "
        f"± {shipped.correct_tolerance}, SHA-256 {made.sha256[:12]} against "
        f"{shipped.sha256[:12]}, {seconds:.0f} s"
    )
    card = shipped.provenance
    differs = [
        f"{key} {card.get(key, 'unset')} here {here.get(key, 'unset')}"
        for key in VERSIONS
        if key in card and card.get(key) != here.get(key)
    ]
    why = f" (the card's {', '.join(differs)})" if differs else ""
    if made.sha256 == shipped.sha256:
        return Outcome(name, "equal", f"{name}: equal (SHA-256 equal; {figures})")
    same_kind = all(key in card and card[key] == here.get(key) for key in KIND)
    if same_kind:
        return Outcome(
            name,
            "FAILED",
            f"{name}: FAILED: the SHA-256 differs on a CPU of the card's kind: "
            f"{figures}{why}; the card is stale: re-make it",
        )
    other = (
        f"the card's {card['cpu']} ({card.get('cpu_flags', '?')})"
        if "cpu" in card
        else f"the card records no CPU flags ({shipped.machine})"
    )
    where = f"on another CPU: {here.get('cpu')} ({here.get('cpu_flags')}), {other}"
    gap = abs(made.test_correct - shipped.test_correct)
    if gap <= shipped.correct_tolerance:
        return Outcome(
            name, "within tolerance", f"{name}: within tolerance {where}: {figures}"
        )
    if gap <= OTHER_CPU_SHARE * shipped.test_count:
        return Outcome(
            name,
            "within tolerance",
            f"{name}: within {OTHER_CPU_SHARE:.1%} of the test set {where} (not "
            f"bitwise: retraining drifts across CPU kinds): {figures}",
        )
    return Outcome(
        name, "FAILED", f"{name}: FAILED {where}: {figures}{why}, beyond the tolerance"
    )


def _run(args: list[str], log: pathlib.Path, env: Mapping[str, str]) -> None:
    """Run a script of examples/ from the checkout, its output into ``log``."""
    with log.open("w") as output:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=EXAMPLES.parent,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    if done.returncode:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"{shlex.join(args)} failed ({done.returncode}):\n{tail}")


def reproduce(
    card_path: pathlib.Path, work: pathlib.Path, data_dir: str | None
) -> tuple[Outcome, zoo.models.ModelCard]:
    """Re-make the card at ``card_path`` in ``work``; its verdict and new card."""
    shipped = read_card(card_path)
    run_dir, weights = work / "run", work / "weights"
    # The card's command, run as it was: with its XLA_FLAGS, or none.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if "xla_flags" in shipped.provenance:
        env["XLA_FLAGS"] = shipped.provenance["xla_flags"]
    start = time.perf_counter()
    mnist_args = rerun_args(shipped.command, run_dir, data_dir)
    _run(["examples/mnist.py", *mnist_args], work / "train.log", env)
    publish = ["examples/publish_weights.py", str(run_dir), "--weights-dir"]
    _run([*publish, str(weights)], work / "publish.log", env)
    seconds = time.perf_counter() - start
    made = read_card(weights / card_path.name)  # its provenance: this machine's
    return compare(shipped, made, made.provenance, seconds), made


def main(argv: Sequence[str] | None = None) -> int:
    """Re-make the cards named on the command line; 1 if any failed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("cards", nargs="*", help=f"default: {' '.join(QUICK)}")
    parser.add_argument("--all", action="store_true", help="every card")
    parser.add_argument(
        "--weights-dir", type=pathlib.Path, default=publish_weights.WEIGHTS
    )
    parser.add_argument(
        "--data-dir", default=os.environ.get("ZOO_DATA_DIR"), help="$ZOO_DATA_DIR"
    )
    parser.add_argument(
        "--keep", type=pathlib.Path, help="keep each run and its weights here"
    )
    args = parser.parse_args(argv)
    folder = args.weights_dir
    names = (
        sorted(p.stem for p in folder.glob("*.json"))
        if args.all
        else args.cards or list(QUICK)
    )
    missing = [n for n in names if not (folder / f"{n}.json").is_file()]
    if missing:
        parser.error(f"no card {missing} in {folder}")
    failed = 0
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"zoo-reproduce-{name}-") as tmp:
            work = args.keep / name if args.keep else pathlib.Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            try:
                outcome, _ = reproduce(folder / f"{name}.json", work, args.data_dir)
            except (OSError, ValueError, RuntimeError) as error:
                outcome = Outcome(name, "FAILED", f"{name}: FAILED: {error}")
        print(outcome.line, flush=True)
        failed += outcome.failed
    print(f"{len(names) - failed} of {len(names)} cards reproduce")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
