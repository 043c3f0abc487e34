"""`meancache run` and `meancache preview` on tiny pipelines saved to disk (offline), and the device / dtype defaults
of the commands that load a pipeline."""

import json
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import meancache_kernels as mck
from meancache_kernels.cli import build_parser, main, parse_set

pytest.importorskip("diffusers")

FLUX_ARGS = ["--set", "height=16", "--set", "width=16", "--set", "max_sequence_length=16", "--set",
             "guidance_scale=3.5"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``saved(kind)``: the directory of a tiny pipeline written with save_pretrained (built once per kind)."""
    from meancache_kernels.diffusers.testing import tiny_pipeline

    dirs = {}

    def get(kind):
        if kind not in dirs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = tmp_path_factory.mktemp(kind)
                tiny_pipeline(kind).save_pretrained(path)
            dirs[kind] = path
        return dirs[kind]

    return get


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64) / 255.0


def _quantised(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.asarray(x, np.float64), 0.0, 1.0) * 255) / 255.0


def test_run_flux_dir_saves_the_images_it_generated_and_counts_calls(saved, tmp_path, capsys):
    from diffusers import DiffusionPipeline

    from meancache_kernels.cli import _budget_config
    from meancache_kernels.diffusers import MeanCacheConfig, mean_cache

    model = saved("flux")
    out = tmp_path / "out"
    prompts = ["a red cube", "a blue ball"]
    assert main(["run", str(model), "--budget", "4", "--steps", "8", "--prompt", prompts[0], "--prompt", prompts[1],
                 "--seed", "3", "--compare", "--no-learn", "--out", str(out), "--no-progress", *FLUX_ARGS]) == 0
    text = capsys.readouterr().out
    assert "FluxPipeline" in text and "on cpu (float32)" in text and "default rule B=4" in text
    assert len(re.findall(r"4 transformer calls \(4 saved, 4/8 steps computed\)", text)) == 2
    result = json.loads((out / "results.json").read_text())
    assert (result["device"], result["dtype"], result["budget"], result["steps"]) == ("cpu", "float32", 4, 8)
    assert result["call_args"]["height"] == 16 and result["call_args"]["guidance_scale"] == 3.5
    expected_steps = mck.Schedule.uniform(8, 4).compute_steps
    for k, row in enumerate(result["runs"]):
        assert row["prompt"] == prompts[k] and row["seed"] == 3 + k
        assert (row["transformer_calls"], row["transformer_calls_saved"]) == (4, 4)
        assert row["compute_steps"] == expected_steps
        assert row["files"] == [f"{k:03d}.png"]

    # The same generations made directly: the CLI passed the prompt, seed, N and call arguments through.
    pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(height=16, width=16, max_sequence_length=16, guidance_scale=3.5, num_inference_steps=8,
              output_type="np")
    for k, prompt in enumerate(prompts):
        full = pipe(prompt=prompt, generator=torch.Generator().manual_seed(3 + k), **kw).images[0]
        with mean_cache(pipe, _budget_config(MeanCacheConfig, 4, learn=False)):
            cached = pipe(prompt=prompt, generator=torch.Generator().manual_seed(3 + k), **kw).images[0]
        assert not np.array_equal(cached, full)
        np.testing.assert_array_equal(_png(out / f"{k:03d}.png"), _quantised(cached))
        np.testing.assert_array_equal(_png(out / f"{k:03d}_full.png"), _quantised(full))
        assert result["runs"][k]["psnr_db"] == [pytest.approx(mck.metrics.psnr(cached, full), rel=1e-9)]
    assert f"PSNR vs uncached {result['runs'][0]['psnr_db'][0]:.2f} dB" in text


def test_run_wan_dir_passes_num_frames_and_counts_true_cfg(saved, tmp_path, capsys):
    out = tmp_path / "wan"
    assert main(["run", str(saved("wan")), "--budget", "3", "--steps", "6", "--prompt", "a cat", "--prompt", "a dog",
                 "--no-learn", "--out", str(out), "--set", "num_frames=5", "--set", "height=16", "--set", "width=16",
                 "--set", "guidance_scale=5.0", "--set", "negative_prompt=blurry", "--set", "max_sequence_length=16",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert len(re.findall(r"6 transformer calls \(6 saved, 3/6 steps computed\)", text)) == 2  # true CFG: 2 per step
    result = json.loads((out / "results.json").read_text())
    for k, row in enumerate(result["runs"]):
        assert (row["calls_per_step"], row["steps_computed"], row["transformer_calls"]) == (2, 3, 6)
        assert row["compute_steps"] == mck.Schedule.uniform(6, 3).compute_steps
        assert row["files"] == [f"{k:03d}_frame{f:03d}.png" for f in range(5)]
    assert result["call_args"]["num_frames"] == 5 and result["call_args"]["negative_prompt"] == "blurry"
    assert _png(out / "001_frame004.png").shape == (16, 16, 3)


def test_run_rejects_bad_input(saved, tmp_path):
    model = str(saved("flux"))
    base = ["run", model, "--steps", "8", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match=r"--budget must be in 1..--steps \(8\), got 9"):
        main([*base, "--budget", "9", "--prompt", "x"])
    with pytest.raises(SystemExit, match="give --prompt TEXT"):
        main([*base, "--budget", "4"])
    with pytest.raises(SystemExit, match="--set takes KEY=VALUE with KEY a Python identifier, got 'height'"):
        main([*base, "--budget", "4", "--prompt", "x", "--set", "height"])
    with pytest.raises(SystemExit, match="FluxPipeline takes no argument 'num_frames'"):
        main([*base, "--budget", "4", "--prompt", "x", "--set", "num_frames=9"])
    with pytest.raises(SystemExit, match="--set num_inference_steps=...: use --steps"):
        main([*base, "--budget", "4", "--prompt", "x", "--set", "num_inference_steps=9"])
    with pytest.raises(SystemExit, match="--compare needs images or frames, not output_type='latent'"):
        main([*base, "--budget", "4", "--prompt", "x", "--compare", "--set", "output_type=latent", *FLUX_ARGS])
    with pytest.raises(SystemExit, match="--cache-dir keeps learnt schedules: it does not go with --no-learn"):
        main([*base, "--budget", "4", "--prompt", "x", "--no-learn", "--cache-dir", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match="meancache run: cannot load the pipeline"):
        main(["run", str(tmp_path / "missing"), "--budget", "4", "--prompt", "x", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="meancache run: --device 'nonsense' is not a torch device"):
        main([*base, "--budget", "4", "--prompt", "x", "--device", "nonsense"])


def test_parse_set_reads_json_values_else_strings():
    got = parse_set(["num_frames=9", "guidance_scale=3.5", "flag=true", "sizes=[1, 2]", "none=null",
                     "negative_prompt=blurry, low quality", "eq=a=b"])
    assert got == {"num_frames": 9, "guidance_scale": 3.5, "flag": True, "sizes": [1, 2], "none": None,
                   "negative_prompt": "blurry, low quality", "eq": "a=b"}
    with pytest.raises(ValueError, match="got '=3'"):
        parse_set(["=3"])


def test_device_and_dtype_default_to_what_load_pipeline_chooses(monkeypatch):
    from meancache_kernels.cli import _resolve_device

    parser = build_parser()
    for argv in (["calibrate", "--pipeline", "m", "--prompts", "p", "--steps", "4", "--out", "o"],
                 ["tune", "--pipeline", "m", "--prompts", "p", "--steps", "4", "--budget", "2", "--profile", "p",
                  "--out", "o"],
                 ["run", "m", "--budget", "2"]):
        args = parser.parse_args(argv)
        assert args.dtype is None and args.device is None  # load_pipeline(dtype=None): bfloat16 on CUDA
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert _resolve_device(args) == "cuda"
        args.device = None
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert _resolve_device(args) == "cpu"
    assert parser.parse_args(["run", "m", "--budget", "2", "--dtype", "float16"]).dtype == "float16"


def test_help_says_bare_meancache_runs_the_demo(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Bare `meancache` (no command, or options only) runs `meancache demo`" in text
    assert "meancache run MODEL --budget B" in text


def test_preview_prints_the_default_rule_without_loading_the_model(saved, capsys):
    from meancache_kernels.diffusers import MeanCacheConfig

    assert main(["preview", "--budget", "17"]) == 0  # the shipped model's scheduler (resolution shift)
    text = capsys.readouterr().out
    assert f": {mck.Schedule.uniform(50, 17).compute_steps}\n" in text  # the rule (until a generation learns)
    assert "17 of 50" in text and len(re.findall(r"skipped, taylorc2", text)) == 33
    assert ("in the first generation (it learns the schedule)" in text) == bool(
        getattr(MeanCacheConfig(budget=17), "learn", False))
    assert main(["preview", str(saved("flux")), "--budget", "4", "--steps", "8", "--no-learn"]) == 0
    text = capsys.readouterr().out
    grid = np.linspace(1.0, 1e-3, 8)  # FlowMatchEulerDiscreteScheduler(shift=1) for 8 steps: sigma_min 1 / 1000
    assert "computed steps: [0, 2, 5, 7]" in text and "skipped steps: 1: taylorc2, 3-4: taylorc2, 6: taylorc2" in text
    assert f"   1  {grid[1]:.5f}  skipped, taylorc2" in text and f"   7  {grid[7]:.5f}  computed" in text


def test_preview_of_a_schedule_file_and_its_errors(saved, tmp_path, capsys):
    path = tmp_path / "s.json"
    mck.Schedule.uniform(8, 3, "taylor1").to_json(path)
    model = str(saved("flux"))
    assert main(["preview", model, "--schedule", str(path), "--steps", "8"]) == 0
    assert "computed steps: [0, 4, 7]" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="give --budget B"):
        main(["preview", model])
    with pytest.raises(SystemExit, match="--budget is not used with --schedule"):
        main(["preview", model, "--schedule", str(path), "--budget", "3"])
    with pytest.raises(SystemExit, match="meancache preview: .*budget"):
        main(["preview", model, "--budget", "9", "--steps", "8"])
    with pytest.raises(SystemExit, match="meancache preview: "):
        main(["preview", str(tmp_path / "missing"), "--budget", "3"])


def test_solve_takes_the_edge_cost_meancache_config_takes(tmp_path, capsys):
    from meancache_kernels._assets import SHIPPED_PROFILE

    prof = mck.Profile.load(SHIPPED_PROFILE)
    for cost in ("velocity", "state"):
        path = tmp_path / f"{cost}.json"
        assert main(["solve", str(SHIPPED_PROFILE), "--budget", "17", "--edge-cost", cost, "--json", str(path)]) == 0
        assert mck.Schedule.from_json(path) == mck.solve(prof, 17, edge_cost=cost)
    capsys.readouterr()
    assert mck.Schedule.from_json(tmp_path / "velocity.json") != mck.Schedule.from_json(tmp_path / "state.json")
    with pytest.raises(SystemExit):
        main(["solve", str(SHIPPED_PROFILE), "--budget", "17", "--edge-cost", "l2"])
    assert "invalid choice: 'l2'" in capsys.readouterr().err


def test_compare_has_the_one_line_beside_the_presets(capsys):
    assert main(["compare", "--dim", "16", "--samples", "8"]) == 0
    out = capsys.readouterr().out
    rows = {m.group(1).strip(): (int(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^(\w[\w ]*?=?\d*|full)\s+\d+\s+(\d+)\s+([0-9.e+-]+)\s", out, re.M)}
    for b in (10, 17, 25):
        calls, err = rows[f"one line B={b}"]
        assert calls == b and 0 < err < rows[f"meancache B={b}"][1]  # the rule beats the paper's presets on the flows


def test_run_saves_latents_as_tensors(saved, tmp_path, capsys):
    out = tmp_path / "lat"
    assert main(["run", str(saved("flux")), "--budget", "3", "--steps", "6", "--prompt", "a red cube", "--no-learn",
                 "--out", str(out), "--set", "output_type=latent", "--no-progress", *FLUX_ARGS]) == 0
    capsys.readouterr()
    result = json.loads((out / "results.json").read_text())
    assert result["runs"][0]["files"] == ["000.pt"] and result["call_args"]["output_type"] == "latent"
    latent = torch.load(out / "000.pt")
    assert isinstance(latent, torch.Tensor) and latent.dtype == torch.float32 and torch.isfinite(latent).all()


def test_run_learns_on_the_first_generation_and_reads_back_cache_dir(saved, tmp_path, capsys):
    cache = tmp_path / "learnt"
    argv = ["run", str(saved("flux")), "--budget", "3", "--steps", "8", "--prompt", "a red cube", "--prompt",
            "a blue ball", "--cache-dir", str(cache), "--no-progress", *FLUX_ARGS]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    assert text.count("(the learning generation: every step computed, the schedule learnt from it)") == 1
    a = json.loads((tmp_path / "a" / "results.json").read_text())["runs"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["runs"]
    assert [r["steps_computed"] for r in a] == [8, 3] and [r.get("learning", False) for r in a] == [True, False]
    assert [r["steps_computed"] for r in b] == [3, 3] and [r["learning"] for r in b] == [False, False]
    assert a[0]["learnt"]["calls"] == 8 and b[0]["learnt"] == a[0]["learnt"]  # what was learnt, read back
    assert a[1]["compute_steps"] == b[0]["compute_steps"] == b[1]["compute_steps"]
    assert any(cache.iterdir())
