"""torch loads only when something needs it: importing the package and running an ONNX Runtime
export never import it, so those users skip its import cost and their OpenMP settings still apply.

Each check runs in a fresh interpreter, since this test process has torch loaded already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from distilmarco import Encoder

# Run first in each script: records where our code first imports torch, for the failure message.
WHO_IMPORTS_TORCH = """
import importlib.abc, sys, traceback
WHO = []
class _Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" and not WHO:
            WHO.extend(f"{f.filename}:{f.lineno} {f.line}" for f in traceback.extract_stack()
                       if "distilmarco" in f.filename)
        return None
sys.meta_path.insert(0, _Watch())
"""


def run_python(script: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run ``script`` in a new interpreter with our import path; it prints one JSON line."""
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", WHO_IMPORTS_TORCH + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# Printed by every script: whether the interpreter holds torch, and which of our lines loaded it.
TORCH_MODULES = "{'loaded': 'torch' in sys.modules, 'by': list(WHO)}"
UNLOADED = {"loaded": False, "by": []}


def test_importing_the_package_leaves_torch_unloaded() -> None:
    result = run_python(
        f"""
        import json, os, sys
        import distilmarco
        from distilmarco import DEFAULT_MODEL, Encoder, Hit, Index, Ranked, Reranker
        from distilmarco.model import SentenceModelSpec, TransformerConfig, resolve
        import distilmarco.cli.app, distilmarco.server.app
        before = {TORCH_MODULES}
        os.environ["OMP_NUM_THREADS"] = "1"  # set after our import: torch still sees it
        # The PyTorch module stays importable from the package; asking for it loads torch.
        from distilmarco.model import SentenceModule, load_sentence_module
        import torch
        print(json.dumps({{"before": before, "after": "torch" in sys.modules,
                           "module": SentenceModule.__module__,
                           "threads": torch.get_num_threads()}}))
        """
    )
    assert result["before"] == UNLOADED
    assert result["after"] is True
    assert result["module"] == "distilmarco.model.sentence"
    assert result["threads"] == 1


def test_onnx_runtime_encodes_an_export_without_torch_and_matches_torch(
    tiny_model_dir: Path, export_cache: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    texts = ["a short query", "a longer passage about how aeroplanes stay in the air", "x"]
    reference = Encoder(tiny_model_dir, backend="torch").encode(texts)
    Encoder(tiny_model_dir, backend="onnx")  # builds the export into the session's cache
    out = tmp_path / "onnx.npy"
    result = run_python(
        f"""
        import json, sys
        import numpy as np
        from distilmarco import Encoder
        enc = Encoder({str(tiny_model_dir)!r}, backend="onnx")
        np.save({str(out)!r}, enc.encode({texts!r}))
        print(json.dumps({{"torch": {TORCH_MODULES}, "backend": enc.backend.name,
                           "precision": enc.backend.precision}}))
        """,
        env={"DISTILMARCO_CACHE": str(export_cache)},
    )
    assert result == {"torch": UNLOADED, "backend": "onnx", "precision": "fp32"}
    vectors = np.load(out)
    assert vectors.shape == reference.shape == (3, 32)
    cos = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1)
    cos /= np.linalg.norm(reference, axis=1)
    assert cos.min() >= 0.99999
    np.testing.assert_allclose(vectors, reference, atol=2e-5)
