"""The Hub code path against a folder laid out as the Hugging Face cache: no network involved."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from distilmarco import Encoder
from distilmarco.errors import ModelNotFoundError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    repo = tmp_path / "hub" / "models--sentence-transformers--tiny-test"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return tmp_path / "hub"


def test_hub_id_loads_from_the_cache(hub_cache: Path, tiny_encoder: Encoder) -> None:
    enc = Encoder("sentence-transformers/tiny-test", cache_dir=hub_cache)
    assert enc.model_id == "sentence-transformers/tiny-test"
    assert enc.revision == COMMIT
    texts = ["from the cache"]
    np.testing.assert_array_equal(enc.encode(texts), tiny_encoder.encode(texts))


def test_short_name_and_pinned_revision(hub_cache: Path) -> None:
    enc = Encoder("tiny-test", revision=COMMIT, cache_dir=hub_cache)
    assert (enc.model_id, enc.revision) == ("sentence-transformers/tiny-test", COMMIT)


def test_offline_without_cache_explains_what_to_do(hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        Encoder("msmarco-distilbert-base-v4", cache_dir=hub_cache)
    message = str(info.value)
    assert "'sentence-transformers/msmarco-distilbert-base-v4'" in message
    assert str(hub_cache) in message  # where it looked
    assert "pass a local folder" in message


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"model folder .* does not exist"):
        Encoder(tmp_path / "nope")


def test_local_folder_is_identified_by_its_absolute_path(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_model_dir.parent)
    relative = Encoder(Path(".") / tiny_model_dir.name)
    assert relative.model_id == str(tiny_model_dir.resolve())
    assert relative.revision is None
