"""A setting chosen on validation from several studies of one rung: the sweep table.

A sweep is a folder of study result folders (saol_jax.studies.results), one per
setting, each trained by `ablate` with the setting's `--config.*` overrides and
`--results SWEEP/<setting>`. Per backbone, the setting with the lowest mean
validation top-1 error of the rung's first output is chosen; test figures are
not read. The README renders it with `<!-- results: SWEEP sweep -->`
(saol_jax.studies.report).
"""

from __future__ import annotations

import math

from saol_jax.core import config_check, paths
from saol_jax.studies import ablate, results


def settings(sweep_dir: str) -> list[dict]:
    """One row per setting folder of `sweep_dir`: backbone, setting, overrides, rung, seeds and the mean ± std
    validation top-1 error of each output; FileNotFoundError when the folder holds no study."""
    sweep_dir = paths.resolve(sweep_dir)
    folders = sorted({path.rsplit("/", 3)[-3] for path in paths.glob(sweep_dir, "*/*/seed*.json")})
    if not folders:
        raise FileNotFoundError(f"no studies (<setting>/<rung>/seed<seed>.json) in {sweep_dir}")
    rows = []
    for folder in folders:
        records = results.read_runs(paths.join(sweep_dir, folder))
        rungs = sorted({r["rung"] for r in records})
        if len(rungs) != 1:
            raise ValueError(f"{sweep_dir}/{folder}: a sweep setting has one rung, found {', '.join(rungs)}")
        entry = ablate.study_payload(records)["rungs"][rungs[0]]
        if "val_top1_error" not in entry:
            raise ValueError(f"{sweep_dir}/{folder}: its runs have no validation metrics to choose on")
        rows.append({"backbone": records[0]["config"]["model"]["backbone"], "setting": folder,
                     "overrides": records[0].get("recipe", {}).get("overrides", {}), "rung": rungs[0],
                     "seeds": len(entry["runs"]), "val_top1_error": entry["val_top1_error"],
                     "config": records[0]["config"]})
    return rows


def swept_values(rows: list[dict]) -> list[dict[str, object]]:
    """Per row, the value its runs had of every field any setting of its backbone overrode, read from
    the run's config (so a row states its schedule even where it kept the recipe's, whose default
    may have changed since); None for a field its config lacks."""
    swept: dict[str, set[str]] = {}
    for row in rows:
        swept.setdefault(row["backbone"], set()).update(row["overrides"])
    return [{key: config_check.field_value(row["config"], key) for key in sorted(swept[row["backbone"]])} for row in rows]


def chosen(rows: list[dict]) -> dict[str, str]:
    """Backbone -> the setting with the lowest mean validation error of its rung's first output."""
    best: dict[str, tuple[float, str]] = {}
    for row in rows:
        error = next(iter(row["val_top1_error"].values()))["mean"]
        if not math.isnan(error) and (row["backbone"] not in best or error < best[row["backbone"]][0]):
            best[row["backbone"]] = (error, row["setting"])
    return {backbone: setting for backbone, (_, setting) in best.items()}


def _values(values: dict[str, object]) -> str:
    return ", ".join(f"`{key}={value}`" if value is not None else f"`{key}`: n/a"
                     for key, value in values.items()) or "(the recipe's)"


def markdown(sweep_dir: str) -> str:
    """The sweep table: a row per setting with its values of the swept fields, the chosen one per backbone
    marked."""
    rows = settings(sweep_dir)
    picks = chosen(rows)
    outputs = list(dict.fromkeys(out for row in rows for out in row["val_top1_error"]))
    lines = ["Validation top-1 error (%) of each setting, mean ± std over seeds; per backbone the setting with "
             "the lowest error of the first output is chosen (test figures are not read):", "",
             *ablate.table_header(["backbone", "setting", "swept fields", "rung", "seeds",
                                   *(f"{ablate.OUTPUTS[out]}, val" for out in outputs), "chosen"])]
    for row, values in zip(rows, swept_values(rows)):
        cells = [ablate.cell(row["val_top1_error"].get(out)) for out in outputs]
        lines.append(ablate.table_row([row["backbone"], row["setting"], _values(values), row["rung"],
                                       str(row["seeds"]), *cells,
                                       "yes" if picks.get(row["backbone"]) == row["setting"] else ""]))
    return "\n".join(lines)
