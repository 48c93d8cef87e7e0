"""Encoder edge cases: a bare string is validated like a list item, and a forked child encodes
instead of hanging on the parent's OpenMP pool."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distilmarco.errors import InputError


def test_a_bare_string_with_a_lone_surrogate_is_an_input_error(tiny_encoder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=r"input 0 contains a lone surrogate \(U\+D800\)"):
        tiny_encoder.encode("\ud800")
    with pytest.raises(InputError, match="lone surrogate"):
        tiny_encoder.encode(["\ud800"])


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_encodes_after_the_parent_used_two_threads(minilm_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from distilmarco import Encoder
        enc = Encoder({str(minilm_dir)!r}, threads=2)
        texts = ["the parent warms its thread pool " * 20] * 8
        parent = enc.encode(texts)
        pid = os.fork()
        if pid == 0:
            signal.alarm(60)  # a hang ends as SIGALRM, not as a stuck test
            child = enc.encode(texts)
            os._exit(0 if np.allclose(child, parent, atol=1e-5) else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0"]  # not -14 (killed by the alarm while hung)
