"""A study's tables rendered from its result files, and markdown files kept equal to them.

    python -m saol_jax.studies.report --study results/NAME [--sections error,versus]   print the tables
    python -m saol_jax.studies.report --update FILE [--root results]    rewrite FILE's marked regions
    python -m saol_jax.studies.report --check FILE [--root results]     one line per mismatch, exit 1 if any

A marked region of a markdown file holds the tables of one study, the folder
NAME under the results root (format in results/README.md); SECTIONs (comma
separated, any of saol_jax.studies.ablate.SECTIONS, default all) pick the tables;
`goals` (a region of its own) is the localisation study's goals table and
`forms` the SS-2 forms against the one the validation rule chooses
(saol_jax.studies.study_goals); `sweep` (a region of its own) reads NAME as a
folder of studies, one per setting, and tables the setting chosen on
validation (saol_jax.studies.sweep). A
NAME ending in `.json` is a `saol_jax.studies.baselines` report, rendered as its
table (no sections):

    <!-- results: NAME [SECTION,...] -->
    ...
    <!-- /results -->

The numbers are computed from the run files alone (saol_jax.studies.ablate.study_payload),
so a table that `--check` accepts is the one its files give.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence

from absl import flags

from saol_jax.commands import cli
from saol_jax.core import paths
from saol_jax.studies import ablate, baselines, results, study_goals, sweep

OPEN = re.compile(r"<!-- results: (?P<name>[^\s>]+)(?: (?P<sections>[\w,]+))? -->\n")
CLOSE = "<!-- /results -->"


class ReportError(ValueError):
    """A results folder, marker or section that cannot be rendered."""


SECTIONS = (*ablate.SECTIONS, "goals", "forms", "sweep")


def baselines_beside(results_dir: str, dataset: str) -> dict:
    """The class-agnostic baselines report of `dataset`'s test split, in the results root that holds
    `results_dir` (benchmark_baselines/<dataset>_test.json)."""
    parent, _, _ = results_dir.rstrip("/").rpartition("/")
    root = parent or "."
    path = paths.join(root, "benchmark_baselines", f"{dataset}_test.json")
    try:
        return json.loads(paths.read_text(path))
    except FileNotFoundError:
        raise ReportError(f"the goals need the baselines report {path}: run python -m saol_jax.studies.baselines "
                          f"--dataset {dataset} --split test --tune_split validation --out {path}") from None


def render(results_dir: str, sections: Sequence[str] = ablate.SECTIONS) -> str:
    """The markdown tables of the study in `results_dir`, those of `sections` (a baselines report's
    table when `results_dir` is its .json file; `goals`: saol_jax.studies.study_goals's table)."""
    if results_dir.endswith(".json"):
        try:
            return baselines.markdown(json.loads(paths.read_text(results_dir)))
        except (FileNotFoundError, ValueError, KeyError) as error:
            raise ReportError(f"{results_dir}: not a baselines report ({error})") from None
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ReportError(f"unknown sections {unknown}; valid: {', '.join(SECTIONS)}")
    if "sweep" in sections:
        if list(sections) != ["sweep"]:
            raise ReportError("the sweep table is a region of its own: <!-- results: SWEEP sweep -->")
        try:
            return sweep.markdown(results_dir)
        except (FileNotFoundError, ValueError) as error:
            raise ReportError(str(error)) from None
    try:
        records = results.read_runs(results_dir)
    except (FileNotFoundError, ValueError) as error:
        raise ReportError(str(error)) from None
    payload = ablate.study_payload(records)
    if list(sections) == ["goals"]:
        return study_goals.markdown(payload, baselines_beside(results_dir, payload["dataset"]))
    if "goals" in sections:
        raise ReportError("the goals table is a region of its own: <!-- results: NAME goals -->")
    tables = [ablate.markdown(payload, sections)] if set(sections) & set(ablate.SECTIONS) else []
    if "forms" in sections:
        tables.append("\n".join(study_goals.forms_markdown(payload)))
    return "\n\n".join(tables)


def regions(text: str, opening: re.Pattern = OPEN, closing: str = CLOSE) -> list[tuple[re.Match, int]]:
    """Each region of `text` between an `opening` marker (a pattern ending in its newline) and the next
    `closing` one: the opening marker's match and where the closing marker starts."""
    found, position = [], 0
    while (match := opening.search(text, position)) is not None:
        end = text.find(closing, match.end())
        if end < 0:
            line = text.count("\n", 0, match.start()) + 1
            raise ReportError(f"line {line}: '{match.group(0).strip()}' has no closing '{closing}'")
        found.append((match, end))
        position = end + len(closing)
    return found


def rendered_anew(text: str, expected: Callable[[re.Match], str], opening: re.Pattern = OPEN,
                  closing: str = CLOSE) -> str:
    """`text` with the body of every region (see `regions`) replaced by `expected(its opening match)`."""
    pieces, position = [], 0
    for match, end in regions(text, opening, closing):
        pieces += [text[position:match.end()], expected(match)]
        position = end
    return "".join(pieces) + text[position:]


def differences(text: str, name: str, expected: Callable[[re.Match], str], opening: re.Pattern = OPEN,
                closing: str = CLOSE, tag: str = "results") -> list[str]:
    """One line per line of a region of `text` (the file `name`) that differs from `expected(its opening
    match)`, naming the file, the line, `tag` and the marker's `name` group."""
    found = []
    for match, end in regions(text, opening, closing):
        want_lines = expected(match).splitlines()
        got_lines = text[match.end():end].splitlines()
        first = text.count("\n", 0, match.end()) + 1
        for k in range(max(len(want_lines), len(got_lines))):
            want = want_lines[k] if k < len(want_lines) else "(no line)"
            got = got_lines[k] if k < len(got_lines) else "(no line)"
            if want != got:
                found.append(f"{name}:{first + k}: {tag} {match.group('name')}: expected {want!r}, found {got!r}")
    return found


def _expected(match: re.Match, root: str) -> str:
    sections = match.group("sections").split(",") if match.group("sections") else ablate.SECTIONS
    return render(paths.join(root, match.group("name")), sections) + "\n"


def update(text: str, root: str) -> str:
    """`text` with every marked region's body rendered anew from the results under `root`."""
    return rendered_anew(text, lambda match: _expected(match, root))


def mismatches(text: str, root: str, name: str) -> list[str]:
    """One line per line of a marked region of `text` (the file `name`) that differs from its rendering."""
    return differences(text, name, lambda match: _expected(match, root))


def define_flags() -> None:
    flags.DEFINE_string("study", None, "A study's results folder: print its tables.")
    flags.DEFINE_list("sections", list(ablate.SECTIONS), "Tables to print with --study.")
    flags.DEFINE_string("update", None, "Markdown file whose marked regions are rendered anew.")
    flags.DEFINE_string("check", None, "Markdown file whose marked regions must equal their rendering.")
    flags.DEFINE_string("root", "results", "Folder of the studies that markers name.")


def main(argv: list[str]) -> None:
    args = cli.arguments(argv)
    if sum(x is not None for x in (args.study, args.update, args.check)) != 1:
        sys.exit("error: give one of --study, --update or --check")
    try:
        if args.study is not None:
            print(render(args.study, args.sections))
        elif args.update is not None:
            text = paths.read_text(args.update)
            paths.write_text(args.update, update(text, args.root))
            print(f"rendered {len(regions(text))} region(s) of {args.update}")
        else:
            problems = mismatches(paths.read_text(args.check), args.root, args.check)
            if problems:
                sys.exit("\n".join(problems))
            print(f"{args.check}: every table equals its result files")
    except (ReportError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")


run = cli.program(main, define_flags)  # console script saol-report

if __name__ == "__main__":
    run()
