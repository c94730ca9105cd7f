"""The README's commands, read out of README.md and run as a newcomer types them.

The Quickstart train command runs from a fresh working directory laid out
like a clone (relative `--workdir`), with only `:smoke` appended, past two
checkpoint saves, then again to see that the finished run is reported
instead of retrained. The notebook snippet and the tools' documented
command lines (visualize, wsol, ablate) run on that workdir. If the README
changes a command, these tests run the new one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from saol_jax.data import prepare
from saol_jax.data.fashion_mnist import DEFAULT_SOURCE_DIR, missing_source_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")


def readme_section(title: str) -> str:
    """The text of the README section whose heading is `title`, up to the next heading of its level."""
    text = open(README, encoding="utf-8").read()
    match = re.search(rf"^(#+) {re.escape(title)}\n(.*?)(?=^\1 |\Z)", text, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(2)


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def readme_command(module: str) -> list[str]:
    """The first command in the README that runs `python -m <module>` (continuation lines joined)."""
    text = open(README, encoding="utf-8").read().replace("\\\n", " ")
    match = re.search(r"(?:\S*python) -m " + re.escape(module) + r"\b[^`\n]*", text)
    assert match, f"README shows no command for {module}"
    return shlex.split(match.group(0))


def as_smoke(argv: list[str]) -> list[str]:
    """The command with this interpreter and `:smoke` appended to its --config."""
    assert argv[0].endswith("python"), argv
    out = [sys.executable, *argv[1:]]
    index = out.index("--config") + 1
    out[index] += ",smoke" if ":" in out[index] else ":smoke"
    return out


def run(argv: list[str], cwd: str, env: dict, timeout: int = 600) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(argv)} failed:\n{proc.stdout[-5000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    """A fresh working directory laid out like a clone, with Fashion-MNIST prepared offline."""
    if missing_source_files(DEFAULT_SOURCE_DIR):
        pytest.skip(f"Fashion-MNIST source files missing in {DEFAULT_SOURCE_DIR} (bash setup.sh installs them)")
    root = tmp_path_factory.mktemp("clone")
    os.symlink(os.path.join(REPO, "configs"), root / "configs")
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    # The README's offline data step, with small benchmarks to keep the test short.
    assert prepare.main(["--data_dir", data_dir, "--cluttered_train", "256", "--cluttered_test", "64",
                         "--target_train", "256", "--target_validation", "64", "--target_test", "64"]) == 0
    env = dict(os.environ, TFDS_DATA_DIR=data_dir, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # the recipe splits the CPU into its own number of devices
    return str(root), env


@pytest.fixture(scope="module")
def quickstart_run(newcomer):
    """Runs the Quickstart train command (with :smoke) twice; returns (cwd, env, workdir, outputs)."""
    cwd, env = newcomer
    block = code_blocks(readme_section("Quickstart"), "bash")[0]
    train_line = next(line for line in block.splitlines() if "saol_jax.train" in line)
    assert train_line.startswith("bash setup.sh && "), train_line
    argv = as_smoke(shlex.split(train_line.split("&&", 1)[1]))
    workdir = argv[argv.index("--workdir") + 1]
    assert not os.path.isabs(workdir), "the README's workdir is meant to be relative"
    first = run(argv, cwd, env)
    second = run(argv, cwd, env)
    return cwd, env, os.path.join(cwd, workdir), (first, second)


def test_quickstart_trains_past_two_checkpoints_with_a_relative_workdir(quickstart_run):
    cwd, _, workdir, (first, _) = quickstart_run
    steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert len(steps) >= 2, steps
    config = json.load(open(os.path.join(workdir, "config.json"), encoding="utf-8"))
    assert config["num_train_steps"] == steps[-1]
    assert "final evaluation:" in first
    assert re.search(r"step \d+/\d+ \(\d+%\).*img_s=.*eta", first), "no text progress line in the log"


def test_rerunning_a_finished_run_reports_its_final_evaluation(quickstart_run):
    _, _, workdir, (first, second) = quickstart_run
    assert "already complete" in second
    final = [line for line in second.splitlines() if line.startswith("final evaluation:")]
    assert final and final[-1] == [line for line in first.splitlines() if line.startswith("final evaluation:")][-1]
    events = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
    assert [e["event"] for e in events].count("eval") == 1, "the finished run was evaluated again"


def test_rerun_recomputes_a_missing_final_evaluation(quickstart_run, tmp_path):
    cwd, env, workdir, (first, _) = quickstart_run
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", workdir, str(copy)], check=True)
    events = (copy / "metrics.jsonl").read_text().splitlines()
    (copy / "metrics.jsonl").write_text("\n".join(e for e in events if '"eval"' not in e) + "\n")
    block = code_blocks(readme_section("Quickstart"), "bash")[0]
    train_line = next(line for line in block.splitlines() if "saol_jax.train" in line)
    argv = as_smoke(shlex.split(train_line.split("&&", 1)[1]))
    argv[argv.index("--workdir") + 1] = str(copy)
    out = run(argv, cwd, env)
    assert "was not logged: evaluating" in out
    expected = json.loads(first.split("final evaluation:")[-1].splitlines()[0])
    got = json.loads(out.split("final evaluation:")[-1].splitlines()[0])
    assert got == pytest.approx(expected, rel=1e-4)


def test_notebook_snippet_runs_as_printed(quickstart_run, tmp_path):
    cwd, env, _, _ = quickstart_run
    snippet = code_blocks(readme_section("Quickstart"), "python")[0]
    workdir = re.search(r'train_and_evaluate\(config, "([^"]+)"\)', snippet).group(1)
    snippet = snippet.replace(workdir, str(tmp_path / "notebook"))
    out = run([sys.executable, "-c", snippet + "\nprint('top1', metrics['eval/saol_top1'])"], cwd, env)
    assert re.search(r"top1 [01]\.\d+", out)
    assert (tmp_path / "notebook" / "checkpoints").is_dir()


def test_visualize_command_on_the_quickstart_workdir(quickstart_run):
    cwd, env, workdir, _ = quickstart_run
    argv = readme_command("saol_jax.commands.visualize")
    argv = [sys.executable, *argv[1:]]
    argv[argv.index("--workdir") + 1] = os.path.relpath(workdir, cwd)
    out = run(argv, cwd, env)
    written = [line for line in out.splitlines() if line.endswith(".png")]
    assert len(written) == 2 and all(os.path.getsize(os.path.join(cwd, p)) > 1000 for p in written)


class _GrayBoxes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """28x28x1 images of 10 classes with one bright rectangle each, its box as `bbox`."""

    VERSION = tfds.core.Version("1.0.0")
    name = "gray_boxes"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"), features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
            "bbox": tfds.features.BBoxFeature(),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 8), "test": self._generate_examples(1, 20)}

    def _generate_examples(self, seed: int, count: int):
        rng = np.random.default_rng(seed)
        for index in range(count):
            top, left = rng.integers(0, 14, size=2)
            image = np.zeros((28, 28, 1), np.uint8)
            image[top:top + 12, left:left + 12] = 255
            yield index, {"image": image, "label": index % 10,
                          "bbox": tfds.features.BBox(top / 28, left / 28, (top + 12) / 28, (left + 12) / 28)}


def test_wsol_command_on_the_quickstart_workdir(quickstart_run, tmp_path):
    cwd, env, workdir, _ = quickstart_run
    _GrayBoxes(data_dir=str(tmp_path)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    argv = readme_command("saol_jax.commands.wsol")
    argv = [sys.executable, *argv[1:]]
    argv[argv.index("--workdir") + 1] = os.path.relpath(workdir, cwd)
    # The quickstart run's Fashion-MNIST has no boxes (and the README's CUB needs a download); another
    # dataset than the run's names its own held-out split for the thresholds.
    argv = [a for a in argv if not a.startswith(("--dataset=", "--threshold_split="))]
    for flag in ("--dataset", "--threshold_split"):
        if flag in argv:
            del argv[argv.index(flag):argv.index(flag) + 2]
    out = run([*argv, "--dataset", "gray_boxes", "--data_dir", str(tmp_path), "--threshold_split", "train"], cwd, env)
    kind = argv[argv.index("--map") + 1] if "--map" in argv else "attention"
    results = json.loads(open(os.path.join(workdir, f"wsol_{kind}.json"), encoding="utf-8").read())
    assert results["count"] == 20 and 0.0 <= results["gt_known_loc"] <= 1.0
    assert "wrote" in out


def test_ablate_command_runs_from_the_fresh_directory(newcomer):
    cwd, env = newcomer
    argv = as_smoke(readme_command("saol_jax.studies.ablate"))
    argv[argv.index("--seeds") + 1] = "1"  # one seed keeps the test short
    argv += ["--rungs", "gap,saol_ss_sd"]
    out = run(argv, cwd, env)
    workdir = os.path.join(cwd, argv[argv.index("--workdir") + 1])
    assert os.path.exists(os.path.join(workdir, "ablation.md")) and "| saol_ss_sd |" in out
