"""How many seeds of a study every rung has finished: `python -m saol_jax.studies.finished WORKDIR`.

A run (`WORKDIR/<rung>/seed<n>`) is finished when its metrics log holds a test
evaluation at its last step: `num_train_steps` where its config.json sets it,
else the end of `num_epochs`. `launch/carried_study.sh` reads back that many
seeds of a study stopped at the end of its time budget, so that the result
files hold the same seeds for every rung.
"""

from __future__ import annotations

import os
import re
import sys

from saol_jax.core import paths
from saol_jax.core.metrics import read_events

RUN_DIR = re.compile(r"seed(\d+)")


def is_finished(run_dir: str) -> bool:
    """True when the run's final test evaluation is logged."""
    config_path = paths.join(run_dir, "config.json")
    if not paths.exists(config_path):
        return False
    config = paths.read_json(config_path)
    for event in read_events(run_dir):
        if event.get("event") != "eval":
            continue
        if config.get("num_train_steps"):
            if event["step"] >= config["num_train_steps"]:
                return True
        elif event.get("epoch", 0.0) >= config["num_epochs"] - 1e-6:
            return True
    return False


def finished_seeds(workdir: str) -> int:
    """The largest k such that every rung folder of `workdir` has finished its first k seeds
    (counted from the lowest seed any run has started); 0 when there is no run."""
    seeds: dict[str, set[int]] = {}
    started = []
    for run_dir in paths.glob(workdir, "*/seed*"):
        match = RUN_DIR.fullmatch(os.path.basename(run_dir))
        if match:
            started.append(int(match.group(1)))
            done = seeds.setdefault(os.path.basename(os.path.dirname(run_dir)), set())
            if is_finished(run_dir):
                done.add(started[-1])
    if not seeds:
        return 0
    first = min(started)
    count = 0
    while all(first + count in done for done in seeds.values()):
        count += 1
    return count


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(finished_seeds(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
