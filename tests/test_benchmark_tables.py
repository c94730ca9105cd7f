"""Benchmark tables in the READMEs equal their result files (benchmarks.tables): the check passes on the
committed READMEs, fails on an edited number, and renders hand-made result files to known tables."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import tables
from saol_jax.core.ladder import BASE_LOSS
from saol_jax.studies import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("README.md", os.path.join("benchmarks", "README.md"))


def _read(name: str) -> str:
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("name", DOCS)
def test_every_benchmark_table_of_the_readmes_equals_its_result_files(name):
    text = _read(name)
    assert tables.OPEN.search(text), f"{name} has no table rendered from benchmarks/results"
    assert tables.mismatches(text, name) == []


def test_the_two_kinds_of_marker_leave_each_other_alone():
    text = _read("README.md")
    bench, studies = tables.regions(text), report.regions(text)
    assert bench and studies
    assert all(m.group(0).startswith("<!-- bench: ") for m, _ in bench)
    assert all(m.group(0).startswith("<!-- results: ") for m, _ in studies)
    # Rendering one kind leaves the other's regions as they are.
    assert tables.update(text) == text


def test_check_fails_on_an_edited_number(tmp_path, capsys):
    text = _read("README.md")
    row = "| SAOL + SS + SD, `paste` (extra forward pass) | 1809 | +32% |"
    assert text.count(row) == 1
    copy = tmp_path / "README.md"
    copy.write_text(text.replace(row, row.replace("1809", "1800")), encoding="utf-8")
    assert tables.main(["--check", str(copy)]) == 1
    problems = capsys.readouterr().err.strip().splitlines()
    line = text[:text.index(row)].count("\n") + 1
    assert problems == [f"{copy}:{line}: bench ss2_cost step_time_paste_targets_cpu.json: "
                        f"expected {row!r}, found {row.replace('1809', '1800')!r}"]
    # --update restores the file's figure.
    assert tables.main(["--update", str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == text


def _shown(form: str, note: str = "") -> str:
    """How a table names an SS-2 form: '(the default)' for the recipes' form, else `note`."""
    note = "the default" if form == BASE_LOSS["ss2_form"] else note
    return f"`{form}`" + (f" ({note})" if note else "")


def _variant(cpu_ms: float, img_s: float, **extra) -> dict:
    return {**extra, "img_per_s_median": img_s, "img_per_s_min": img_s - 1, "img_per_s_max": img_s + 1,
            "step_ms_median": 64000 / img_s, "cpu_ms_per_step_median": cpu_ms, "compile_s": 2.25}


def _step_time(variants: dict, batch: int = 64, **workload) -> dict:
    return {"workload": {"backbone": "resnet56", "batch": batch, "cutmix_prob": 1.0, "backbone_kwargs": [],
                         **workload},
            "devices": 8, "per_device_batch": batch // 8, "variants": variants,
            "saol_over_gap_throughput_cpu_time": variants["gap"]["cpu_ms_per_step_median"]
            / variants["saol_ss_sd"]["cpu_ms_per_step_median"]}


def _write(root, name: str, payload: dict) -> str:
    (root / name).write_text(json.dumps(payload), encoding="utf-8")
    return name


def test_a_hand_made_result_renders_to_its_table(tmp_path):
    name = _write(tmp_path, "toy.json", _step_time({
        "gap": _variant(1000.0, 64.0, ss2_form=None),
        "saol_ss_sd": _variant(1254.0, 50.0, ss2_form="paste"),
        "saol_ss_sd@renorm": _variant(1049.0, 61.0, ss2_form="renorm"),
    }))
    assert tables.render("ss2_cost", [name], str(tmp_path)) == "\n".join([
        "| head | CPU ms/step | vs GAP-FC |",
        "|---|---|---|",
        "| GAP-FC + CutMix | 1000 | — |",
        f"| SAOL + SS + SD, {_shown('paste', 'extra forward pass')} | 1254 | +25% |",
        f"| SAOL + SS + SD, {_shown('renorm')} | 1049 | +5% |",
    ])
    assert tables.render("step_time_vs_gap", [name], str(tmp_path)).splitlines()[2:] == [
        "| GAP-FC | 8 | 8 | 64.0 | 63.0-65.0 | 1000 | 1000 | 2.2 | 1.00 |",
        "| SAOL+SS+SD (paste) | 8 | 8 | 50.0 | 49.0-51.0 | 1280 | 1254 | 2.2 | 1.25 |",
        "| SAOL+SS+SD (renorm) | 8 | 8 | 61.0 | 60.0-62.0 | 1049 | 1049 | 2.2 | 1.05 |",
    ]


def test_a_file_from_before_the_ss2_forms_names_renorm_and_several_files_make_one_table(tmp_path):
    old = _write(tmp_path, "old.json", _step_time({"gap": _variant(900.0, 70.0),
                                                   "saol_ss_sd": _variant(1000.0, 60.0)}))
    vit = _write(tmp_path, "vit.json", _step_time({"gap": _variant(800.0, 5.0, ss2_form=None),
                                                   "saol_ss_sd": _variant(1000.0, 4.0, ss2_form="paste")},
                                                  batch=4, backbone="vit_base_patch16",
                                                  backbone_kwargs=[["pool", "token"]]))
    assert "| SAOL+SS+SD (renorm) | 8 | 8 |" in tables.render("step_time", [old], str(tmp_path))
    gpu = _step_time({"gap": _variant(800.0, 5.0, ss2_form=None), "saol_ss_sd": _variant(1000.0, 4.0, ss2_form="renorm")},
                     batch=128, backbone="vit_base_patch16", backbone_kwargs=[["pool", "token"]], dtype="bfloat16")
    gpu.update(devices=1, device_kind="NVIDIA H100 80GB HBM3", saol_over_gap_throughput=0.97)
    on_gpu = _write(tmp_path, "gpu.json", gpu)
    assert tables.render("backbone_ratio", [old, vit, on_gpu], str(tmp_path)).splitlines()[2:] == [
        f"| resnet56 | 8 CPU devices, float32 | 64 | {_shown('renorm')} | n/a | 0.90 | `benchmarks/results/old.json` |",
        f"| ViT-B/16, class-token head | 8 CPU devices, float32 | 4 | {_shown('paste')} | n/a | 0.80 "
        "| `benchmarks/results/vit.json` |",
        f"| ViT-B/16, class-token head | 1 x NVIDIA H100 80GB HBM3, bfloat16 | 128 | {_shown('renorm')} | 0.97 | 0.80 "
        "| `benchmarks/results/gpu.json` |",
    ]


def test_mistakes_get_one_error_line(tmp_path, capsys):
    name = _write(tmp_path, "toy.json", {"rows": []})
    doc = tmp_path / "doc.md"
    for marker, message in (("nope toy.json", "unknown table kind 'nope'"),
                            ("step_time missing.json", "no result file"),
                            ("step_time", "a step_time table names its result files"),
                            ("step_time toy.json,toy.json", "a step_time table reads one result file"),
                            (f"step_time {name}", "not a step_time result")):
        doc.write_text(f"<!-- bench: {marker} -->\n| stale |\n<!-- /bench -->\n", encoding="utf-8")
        assert tables.main(["--check", str(doc), "--root", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    doc.write_text("<!-- bench: step_time toy.json -->\nno end\n", encoding="utf-8")
    assert tables.main(["--update", str(doc), "--root", str(tmp_path)]) == 1
    assert "has no closing '<!-- /bench -->'" in capsys.readouterr().err
    assert doc.read_text(encoding="utf-8") == "<!-- bench: step_time toy.json -->\nno end\n"


def test_accelerator_parts_render_as_the_check_summarises_them(tmp_path):
    (tmp_path / "h200").mkdir()
    step = _step_time({"gap": _variant(500.0, 600.0), "saol_ss_sd": _variant(520.0, 570.0)}, batch=256)
    step.update(device_kind="H200", devices=1, saol_over_gap_throughput=0.95,
                goals={"saol_within_5pct": {"limit": 0.95, "measured": 0.95, "met": True}})
    step["workload"].update(image_size=224, dtype="bfloat16")
    _write(tmp_path, "h200/step_time.json", step)
    assert tables.render("accelerator", ["h200/step_time.json"], str(tmp_path)).splitlines()[2:] == [
        "| step_time | GAP-FC img/s (resnet56 224² bfloat16, batch 256 on 1 x H200) | 600.0 |",
        "| step_time | SAOL+SS+SD (renorm) img/s | 570.0 |",
        "| step_time | SAOL+SS+SD (renorm) / GAP-FC throughput | 0.950 |",
        "| step_time | SAOL+SS+SD (renorm) / GAP-FC throughput by CPU time | 0.962 |",
        "| step_time | goal saol_within_5pct | 0.950 vs 0.95: met |",
    ]
    _write(tmp_path, "h200/other.json", step)
    with pytest.raises(tables.TableError, match="not parts of the accelerator check: other"):
        tables.render("accelerator", ["h200/other.json"], str(tmp_path))


def test_the_timm_check_renders_one_row_a_model(tmp_path):
    name = _write(tmp_path, "timm.json", {"versions": {"timm": "1.0.29", "torch": "2.11.0", "jax": "0.11.2", "flax": None},
                                          "max_abs_logit_difference": {"vit_tiny_patch16_224": 1.01e-06,
                                                                       "convnext_tiny": 1.9e-06}})
    assert tables.render("timm_check", [name], str(tmp_path)).splitlines()[2:] == [
        "| `vit_tiny_patch16_224` | 1.01e-06 | timm 1.0.29, torch 2.11.0, jax 0.11.2 |",
        "| `convnext_tiny` | 1.90e-06 | timm 1.0.29, torch 2.11.0, jax 0.11.2 |",
    ]
