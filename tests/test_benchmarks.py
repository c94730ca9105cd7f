"""The benchmarks in their tiny settings: tables, JSON, goals, loss agreement across device counts."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import grad_accum, head_cost, memory, scaling, step_time
from saol_jax.core import sharding
from saol_jax.core.ladder import BASE_LOSS


def read(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_head_cost_tiny(tmp_path, capsys):
    out = tmp_path / "head_cost.json"
    payload = head_cost.main(["--tiny", "--out", str(out)])
    assert read(out)["rows"] == payload["rows"]
    assert "machine" in read(out)
    (row,) = payload["rows"]
    assert row["saol_params"] > row["gap_params"]
    assert row["flops_ratio"] > 1.0 and row["params_ratio"] > 1.0
    assert "| resnet_cifar |" in capsys.readouterr().out


def test_forward_flops_of_a_known_layer_count():
    # GAP-FC on an 8-16-32 ResNet-8: its FC layer alone is 2 * 32 * 10 FLOPs plus the bias;
    # growing K by 1 adds exactly those of one more output unit.
    config = head_cost.model_config("resnet_cifar", "gap", 8, depth=8, widths=(8, 16, 32))
    params_10, flops_10 = head_cost.forward_cost(config, 16, 10)
    params_11, flops_11 = head_cost.forward_cost(config, 16, 11)
    assert params_11 - params_10 == 32 + 1
    assert flops_11 - flops_10 == pytest.approx(2 * 32 + 1, abs=1)


def test_step_time_tiny(tmp_path):
    out = tmp_path / "step_time.json"
    result = step_time.main(["--tiny", "--reps", "2", "--steps", "1", "--out", str(out)])
    assert read(out)["variants"].keys() == {"gap", "saol_ss_sd"}
    for variant in result["variants"].values():
        assert len(variant["samples_img_per_s"]) == 2
        assert variant["img_per_s_min"] <= variant["img_per_s_median"] <= variant["img_per_s_max"]
        assert variant["compile_s"] > 0
    assert result["devices"] == 8 and result["per_device_batch"] == 2
    goal = result["goals"]["saol_within_5pct"]
    assert goal["met"] == (goal["measured"] >= 0.95)


def test_grad_accum_tiny_keeps_rows_on_their_devices(tmp_path):
    out = tmp_path / "grad_accum.json"
    result = grad_accum.main(["--tiny", "--accum", "1,2", "--reps", "1", "--steps", "1", "--out", str(out)])
    variants = read(out)["variants"]
    assert variants.keys() == {"1", "2 loop", "2 unrolled"}
    single, loop = variants["1"]["collectives"], variants["2 loop"]["collectives"]
    # The loop all-reduces gradients and BN statistics once per micro-batch, as the single step does once;
    # splitting the batch into micro-batches adds no gather or exchange of rows.
    assert loop["per_micro_batch"]["all-reduce"] == single["per_step"]["all-reduce"] > 0
    assert loop["per_step"]["all-reduce"] == 0 == single["per_micro_batch"]["all-reduce"]
    for op in ("all-gather", "all-to-all", "collective-permute"):
        assert loop["per_step"][op] + loop["per_micro_batch"][op] == single["per_step"][op], op
    assert result["variants"]["1"]["cpu_time_over_k1"] == 1.0


def test_collectives_counts_loop_bodies_apart():
    hlo = """HloModule m

%body.1 (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %a = f32[4] all-reduce(f32[4] %x), to_apply=%add
  %b = f32[4] all-reduce(f32[4] %a), to_apply=%add
}

ENTRY %main.2 (p0: f32[4]) -> f32[4] {
  %w = (s32[], f32[4]) while((s32[], f32[4]) %t), condition=%cond.1, body=%body.1
  %g = f32[8] all-gather-start(f32[4] %y), dimensions={0}
  %r = f32[4] all-reduce(f32[4] %z), to_apply=%add
}
"""
    counts = grad_accum.collectives(hlo)
    assert counts["per_micro_batch"]["all-reduce"] == 2 and counts["per_micro_batch"]["all-gather"] == 0
    assert counts["per_step"]["all-reduce"] == 1 and counts["per_step"]["all-gather"] == 1


def test_scaling_tiny_losses_agree_and_pipeline_is_timed(tmp_path, tiny_dataset):
    pipeline = scaling.pipeline_dataset(tiny_dataset["name"], tiny_dataset["data_dir"])
    out = tmp_path / "scaling.json"
    result = scaling.run(step_time.TINY, [1, 2], reps=1, steps=1, out=str(out), pipeline=pipeline,
                         pipeline_batches=3)
    assert [r["devices"] for r in result["devices"]] == [1, 2]
    assert result["workload"]["cutmix_group_size"] == step_time.TINY.batch // 2
    assert result["loss_agreement"]["agree"], result["loss_agreement"]
    assert result["pipeline"]["img_per_s"] > 0
    assert read(out)["loss_agreement"] == result["loss_agreement"]


def test_pipeline_dataset_missing_is_skipped(tmp_path):
    assert scaling.pipeline_dataset("fashion_mnist", str(tmp_path / "nowhere")) is None


def test_step_time_of_an_ss2_form(tmp_path, capsys):
    out = tmp_path / "step_time.json"
    result = step_time.main(["--tiny", "--reps", "1", "--steps", "1", "--out", str(out),
                             "--rungs", "gap,saol_ss_sd,saol_ss_sd@renorm"])
    variants = read(out)["variants"]
    assert variants.keys() == {"gap", "saol_ss_sd", "saol_ss_sd@renorm"} == result["variants"].keys()
    # A rung without a form runs the recipes' default; every entry and row names its form.
    default = BASE_LOSS["ss2_form"]
    assert [variants[r]["ss2_form"] for r in variants] == [None, default, "renorm"]
    printed = capsys.readouterr().out
    assert f"| SAOL+SS+SD ({default}) |" in printed and "| SAOL+SS+SD (renorm) |" in printed
    assert "| GAP-FC |" in printed


def test_memory_of_an_ss2_form(tmp_path, capsys):
    out = tmp_path / "memory.json"
    payload = memory.main(["--tiny", "--rungs", "gap,saol_ss_sd@mass_mix", "--out", str(out)])
    rungs = read(out)["settings"]["tiny"]["rungs"]
    assert rungs == payload["settings"]["tiny"]["rungs"]
    assert {r: v["ss2_form"] for r, v in rungs.items()} == {"gap": None, "saol_ss_sd@mass_mix": "mass_mix"}
    assert "SAOL+SS+SD (mass_mix)" in capsys.readouterr().out


@pytest.mark.parametrize("rungs, message", [
    ("gap,saol_ss_sd,saol_ss_sd@area", "only name"),  # unknown form
    ("gap,saol_ss_sd,gap_fc", "only name"),  # unknown rung
])
def test_both_benchmarks_reject_unknown_rungs_and_forms(rungs, message, capsys):
    for main in (step_time.main, memory.main):
        with pytest.raises(SystemExit):
            main(["--tiny", "--rungs", rungs])
        assert message in capsys.readouterr().err
    assert step_time.parse_rungs("gap_ms,saol@paste_mixed") == ("gap_ms", "saol@paste_mixed")
    assert step_time.parse_rungs("gap,saol_ss_sd@paste_self") == ("gap", "saol_ss_sd@paste_self")
    # A `paste` variant's step runs `paste` with the variant's fields, the recipes' values elsewhere.
    loss = step_time.rung_loss_config("saol_ss_sd@paste_halfres")
    assert (loss["ss2_form"], loss["paste_clean_scale"], loss["paste_clean_fraction"]) == (
        "paste", 2, BASE_LOSS["paste_clean_fraction"])
    assert step_time.rung_loss_config("saol_ss_sd") == BASE_LOSS
    with pytest.raises(ValueError, match="must include gap,saol_ss_sd"):  # the throughput ratio needs both
        step_time.parse_rungs("gap,saol_ss", step_time.VARIANTS)


TORCH_SKIP = "torch is not importable: install requirements-dev.txt (or requirements-bench.txt)"


@pytest.fixture
def torch_ratio():
    """benchmarks.torch_ratio, skipping only where torch itself cannot be imported."""
    pytest.importorskip("torch", reason=TORCH_SKIP)
    from benchmarks import torch_ratio

    return torch_ratio


def test_torch_ratio_tiny(tmp_path, torch_ratio):
    out = tmp_path / "torch_ratio.json"
    result = torch_ratio.main(["--tiny", "--reps", "2", "--steps", "1", "--warmup", "1", "--out", str(out),
                               "--xla", "xla_cpu_enable_fast_math=false", "--torch_threads", "1,2"])
    names = {"jax", "xla_cpu_enable_fast_math=false", "torch 1 thread", "torch 2 threads"}
    assert read(out)["variants"].keys() == names
    assert result["workload"]["cutmix_prob"] == 0.0
    for variant in result["variants"].values():
        assert len(variant["samples_img_per_s"]) == 2
        assert variant["img_per_s_min"] <= variant["img_per_s_median"] <= variant["img_per_s_max"]
    assert result["variants"][result["torch"]["best"]]["over_torch"] == 1.0
    assert result["jax_over_torch"] == result["variants"]["jax"]["over_torch"] > 0


def test_torch_twin_of_resnet56_has_the_same_parameter_count(torch_ratio):
    depth, widths = torch_ratio.torch_architecture(step_time.Workload())
    twin = torch_ratio.TorchResNetCifar(depth, widths, num_classes=100)
    params, _ = head_cost.forward_cost(head_cost.model_config("resnet56", "gap", 128), 32, 100)
    assert torch_ratio.param_count_torch(twin) == params == 858_868


def test_xla_option_values_are_typed(torch_ratio):
    options = "xla_cpu_use_onednn=true;--xla_cpu_prefer_vector_width=512;xla_cpu_max_isa=AVX2"
    parsed = {"xla_cpu_use_onednn": True, "xla_cpu_prefer_vector_width": 512, "xla_cpu_max_isa": "AVX2"}
    assert torch_ratio.parse_options(options) == parsed


def test_paste_variants_train_with_targets_of_their_own():
    # Each cheaper `paste` target runs in the real train step and trains the attention its own way
    # from the same start (one device, so a quarter of its 16 examples is 4 rows). The attention
    # starts uniform, where -sum T log A is log(cells) for every target; its first update is A - T,
    # so the second step's SS-2 term tells the targets apart.
    mesh = sharding.make_mesh(1)
    ss2 = {}
    for rung in ("saol_ss_sd@paste", "saol_ss_sd@paste_self", "saol_ss_sd@paste_quarter",
                 "saol_ss_sd@paste_halfres"):
        prepared, _ = step_time.prepare(step_time.TINY, rung, mesh)
        state, _ = prepared.step(prepared.state, prepared.batch, prepared.key)
        _, metrics = prepared.step(state, prepared.batch, prepared.key)
        ss2[rung] = float(metrics["loss/ss2"])
    assert all(math.isfinite(v) and v > 0 for v in ss2.values()), ss2
    assert len({round(v, 6) for v in ss2.values()}) == len(ss2), ss2
