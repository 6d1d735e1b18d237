"""CPU checks of the prepared GPU check: scripts/gpu_wheels.sh and scripts/gpu_check.sh compose the
intended commands, and what they run on the GPU image imports without the packages it lacks."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = ROOT / "scripts" / "gpu_check.sh"
GPU_WHEELS = ROOT / "scripts" / "gpu_wheels.sh"

# Installed on the development machine, absent from the GPU image (and not among its wheels,
# except hydra/omegaconf/antlr4, which the GPU tests must not need either).
ABSENT_ON_GPU_IMAGE = ["hydra", "omegaconf", "antlr4", "pynwb", "mne", "brian2", "datasets", "skimage",
                       "wandb", "submitit", "nbclient", "nbformat", "flash_attn"]


def run_bash(script: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("script", [GPU_CHECK, GPU_WHEELS])
def test_scripts_parse(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_gpu_wheels_prints_pinned_pip_commands():
    proc = run_bash(GPU_WHEELS, "/tmp/wheel-dest", env={"PRINT_ONLY": "1"})
    assert proc.returncode == 0, proc.stderr
    download, build = [shlex.split(line) for line in proc.stdout.strip().splitlines()]

    assert download[:5] == ["python3", "-m", "pip", "download", "--no-deps"]
    assert "--only-binary=:all:" in download
    opts = list(zip(download, download[1:]))
    assert ("--python-version", "3.12") in opts and ("--implementation", "cp") in opts
    assert ("-d", "/tmp/wheel-dest") in opts
    platforms = [b for a, b in opts if a == "--platform"]
    assert platforms == ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"]
    pins = dict(arg.split("==") for arg in download if "==" in arg)
    assert {"hydra-core", "omegaconf", "pytest", "pluggy", "iniconfig"} <= set(pins)

    assert build[:4] == ["python3", "-m", "pip", "wheel"] and ("-w", "/tmp/wheel-dest") in zip(build, build[1:])
    assert build[-1] == "antlr4-python3-runtime==4.9.3"
    for version in [*pins.values(), "4.9.3"]:
        assert version.replace(".", "").isdigit(), version  # exact pins, no ranges


def test_gpu_check_dry_run_composes_its_commands(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "pytest-9.2.0-py3-none-any.whl").touch()
    proc = run_bash(GPU_CHECK, str(tmp_path / "out"), env={"DRY_RUN": "1", "WHEEL_DIR": str(wheels)})
    assert proc.returncode == 0, proc.stderr
    steps = {}
    for line in proc.stdout.splitlines():
        if line.startswith("+ "):
            name, command = line[2:].split(": ", 1)
            steps[name] = shlex.split(command)
    assert list(steps) == ["wheels", "nvidia_smi", "versions", "pytest", "mfu_sdpa", "mfu_flex"]

    install = steps["wheels"]
    assert install[:4] == ["python3", "-m", "pip", "install"]
    for flag in ("--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade"):
        assert flag in install
    assert ("--target", "/tmp/site") in zip(install, install[1:])
    assert install[-1] == str(wheels / "pytest-9.2.0-py3-none-any.whl")

    pytest_cmd = steps["pytest"]
    assert pytest_cmd[:5] == ["python3", "-m", "pytest", "-m", "gpu"]
    assert "no:cacheprovider" in pytest_cmd
    assert "tests/nn/test_attention.py" in pytest_cmd  # the files holding GPU tests, not the suite

    for backend in ("sdpa", "flex"):
        bench = steps[f"mfu_{backend}"]
        assert bench[:2] == ["python3", "scripts/bench_mfu.py"]
        opts = list(zip(bench, bench[1:]))
        for pair in [("--backend", backend), ("--device", "cuda"), ("--precision", "bf16-mixed"),
                     ("--attn-dropout", "0")]:
            assert pair in opts, pair
        assert "--json" in bench and "--small" not in bench  # neuroformer_base
        # the composed arguments are ones bench_mfu accepts
        sys.path.insert(0, str(ROOT / "scripts"))
        import bench_mfu
        args = [a for a in bench[2:] if a not in ("--device", "cuda")]
        assert bench_mfu.parse_args(args).backend == backend


def test_gpu_tests_and_bench_import_without_what_the_image_lacks():
    # Collect the GPU test files and import bench_mfu with the image's missing packages made
    # unimportable: collection on the GPU machine must not fail on them.
    files = subprocess.run(["grep", "-rlE", "--include=test_*.py", r"pytest\.mark\.gpu", "tests"], cwd=ROOT,
                           capture_output=True, text=True).stdout.split()
    assert "tests/nn/test_attention.py" in files
    code = textwrap.dedent(f"""
        import importlib.abc, sys
        blocked = set({ABSENT_ON_GPU_IMAGE!r})
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in blocked:
                    raise ImportError(f"{{name}} is not on the GPU image")
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, "scripts")
        import bench_mfu
        import pytest
        sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "gpu", *{files!r}]))
    """)
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test_flash_varlen_query_padding_matches_reference_on_cuda" in proc.stdout
