import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("triton", "diffusers", "transformers") or name == "meancache_kernels._C":
                raise ImportError(f"blocked for the test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True)


def test_import_is_cheap_and_works_without_optional_parts():
    r = _run(
        """
        import sys
        import torch
        import meancache_kernels as mck
        from meancache_kernels.testing import GaussianMixtureFlow, flow_sigmas
        heavy = [m for m in ("triton", "diffusers", "transformers", "meancache_kernels._C") if m in sys.modules]
        assert not heavy, heavy
        flow = GaussianMixtureFlow.random(8)
        z = torch.randn(2, 8, dtype=torch.float64)
        out = mck.sample(flow, z, flow_sigmas(50), mck.presets.get("qwen-image", 10))
        assert out.shape == (2, 8) and torch.isfinite(out).all()
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_import_does_not_load_extension_or_triton():
    r = subprocess.run(
        [sys.executable, "-c", "import sys, meancache_kernels; print(sorted(m for m in sys.modules "
         "if m.startswith(('triton', 'diffusers', 'meancache_kernels._C'))))"],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
