"""Cross-encoder scores against sentence-transformers' CrossEncoder on the same random folders:
BERT and DistilBERT, one label and three, both folder layouts, truncated pairs included."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cross_models import build_cross_encoder

from distilmarco.errors import CheckpointError, InputError, ModelFormatError, TruncationError
from distilmarco.model.cross_encoder import CrossEncoderSpec
from distilmarco.reranker import Ranked, Reranker, apply_activation, rerank_passages

MAX_POSITIONS = 64  # small, so that ordinary passages get truncated
QUERY = "what is the capital of france"
PASSAGES = [
    "Paris is the capital and most populous city of France.",
    "Berlin had a population of 3,520,031 in 2019.",
    "cats",
    "The Seine flows through Paris. " * 12,  # over 64 tokens with the query: truncated
    "",
    "Un café à Paris coûte 2,50 € — ça dépend du quartier!",
    "word " * 400,  # over the tokenizer's character cap (64 x 24): the long-text path
]


@pytest.fixture(scope="module")
def cross_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    built: dict[tuple[object, ...], Path] = {}

    def make(arch: str, num_labels: int, layout: str) -> Path:
        key = (arch, num_labels, layout)
        if key not in built:
            folder = tmp_path_factory.mktemp("cross") / f"{arch}-{num_labels}-{layout}"
            built[key] = build_cross_encoder(
                folder, arch=arch, num_labels=num_labels, layout=layout, max_positions=MAX_POSITIONS
            )
        return built[key]

    return make


def reference_truncated(folder: Path, query: str, passages: list[str]) -> int:
    """Pairs longer than the model's limit, counted with transformers' own tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    return sum(len(tok(query, p)["input_ids"]) > MAX_POSITIONS for p in passages)


@pytest.mark.parametrize(
    ("arch", "num_labels", "layout"),
    [
        ("bert", 1, "st6"),
        ("bert", 3, "plain"),
        ("distilbert", 1, "plain"),
        ("distilbert", 3, "st6"),
    ],
)
def test_scores_equal_cross_encoder_predict(
    cross_dir: Callable[..., Path], arch: str, num_labels: int, layout: str
) -> None:
    from sentence_transformers import CrossEncoder

    folder = cross_dir(arch, num_labels, layout)
    reference = CrossEncoder(str(folder), device="cpu").predict([(QUERY, p) for p in PASSAGES])
    rr = Reranker(folder)
    scores, stats = rr.score_with_stats(QUERY, PASSAGES, truncation="count")
    assert rr.spec.layout == layout and rr.spec.num_labels == num_labels
    assert rr.activation == ("sigmoid" if num_labels == 1 else "identity")
    assert scores.dtype == np.float32 and scores.shape == reference.shape
    assert scores.shape == ((len(PASSAGES),) if num_labels == 1 else (len(PASSAGES), num_labels))
    np.testing.assert_allclose(scores, reference, atol=1e-5, rtol=0)
    assert np.ptp(reference, axis=0).min() > 0.01  # the scores really depend on the passage
    assert stats.truncated == reference_truncated(folder, QUERY, PASSAGES) == 2
    assert stats.pairs == len(PASSAGES) and stats.tokens <= stats.padded_tokens


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
@pytest.mark.parametrize("packed_min_padding", [0.0, 1.0])
def test_packed_and_padded_batches_equal_cross_encoder_predict(
    cross_dir: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    arch: str,
    packed_min_padding: float,
) -> None:
    """Both torch paths (packed: padding skipped; plain: padding computed and masked), with the
    last layer run for [CLS] only, on one batch of very different lengths."""
    from sentence_transformers import CrossEncoder

    import distilmarco.backends.cross_runtime as runtime

    monkeypatch.setattr(runtime, "PACKED_MIN_PADDING", packed_min_padding)
    folder = cross_dir(arch, 1, "plain")
    passages = PASSAGES[:4]  # one batch: at most 256 padded tokens take any lengths
    reference = CrossEncoder(str(folder), device="cpu").predict([(QUERY, p) for p in passages])
    scores, stats = Reranker(folder).score_with_stats(QUERY, passages, truncation="count")
    assert stats.batches == 1 and stats.padded_tokens > 1.5 * stats.tokens  # much padding
    np.testing.assert_allclose(scores, reference, atol=1e-5, rtol=0)


def test_first_token_states_equal_the_full_last_layer(cross_dir: Callable[..., Path]) -> None:
    import torch

    from distilmarco.model.cross_encoder import first_token_states, load_cross_encoder
    from distilmarco.model.transformer import run_layers

    for arch in ("bert", "distilbert"):
        spec = CrossEncoderSpec.from_folder(cross_dir(arch, 1, "plain"))
        module = load_cross_encoder(spec)
        layers = module.backbone.layer if arch == "bert" else module.backbone.transformer.layer
        torch.manual_seed(0)
        x = torch.randn(3, 9, spec.transformer.hidden_size)
        mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7])
        with torch.inference_mode():
            full = run_layers(layers, x, mask, packed=False)[:, 0]
            for packed in (False, True):
                first = first_token_states(layers, x, mask, packed)
                assert first.shape == full.shape
                torch.testing.assert_close(first, full, atol=1e-5, rtol=1e-5)


def test_long_query_and_passage_are_cut_as_the_reference_cuts_them(
    cross_dir: Callable[..., Path],
) -> None:
    from sentence_transformers import CrossEncoder

    folder = cross_dir("bert", 1, "st6")
    query = "where does the river seine flow " * 30
    passages = ["short answer", "the seine flows through paris and rouen " * 40]
    reference = CrossEncoder(str(folder), device="cpu").predict([(query, p) for p in passages])
    scores, stats = Reranker(folder).score_with_stats(query, passages, truncation="count")
    np.testing.assert_allclose(scores, reference, atol=1e-5, rtol=0)
    assert stats.truncated == 2


def test_rank_orders_as_cross_encoder_rank(cross_dir: Callable[..., Path]) -> None:
    from sentence_transformers import CrossEncoder

    folder = cross_dir("distilbert", 1, "plain")
    expected = CrossEncoder(str(folder), device="cpu").rank(QUERY, PASSAGES)
    ranked = Reranker(folder).rank(QUERY, PASSAGES)
    assert [r.index for r in ranked] == [int(e["corpus_id"]) for e in expected]
    np.testing.assert_allclose([r.score for r in ranked], [e["score"] for e in expected], atol=1e-5)
    top = Reranker(folder).rank(QUERY, PASSAGES, k=2)
    assert top == ranked[:2] and all(isinstance(r, Ranked) for r in top)
    assert rerank_passages(Reranker(folder), QUERY, PASSAGES, 3) == ranked[:3]
    assert rerank_passages(Reranker(folder), QUERY, [], 3) == []


def test_stored_activation_wins_as_in_sentence_transformers(
    cross_dir: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from sentence_transformers import CrossEncoder

    folder = tmp_path / "identity"
    shutil.copytree(cross_dir("bert", 1, "plain"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["sbert_ce_default_activation_function"] = "torch.nn.modules.linear.Identity"
    (folder / "config.json").write_text(json.dumps(config))
    reference = CrossEncoder(str(folder), device="cpu").predict([(QUERY, p) for p in PASSAGES])
    rr = Reranker(folder)
    assert rr.activation == "identity"
    np.testing.assert_allclose(rr.score(QUERY, PASSAGES), reference, atol=1e-5, rtol=0)
    assert (reference < 0).any() or (reference > 1).any()  # raw logits, not probabilities

    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Tanh"}
    (folder / "config.json").write_text(json.dumps(config))
    assert CrossEncoderSpec.from_folder(folder).activation == "tanh"
    config["sentence_transformers"] = {"activation_fn": "mypackage.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        assert CrossEncoderSpec.from_folder(folder).activation == "sigmoid"
    assert "mypackage.Evil" in caplog.text
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Softmax"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match="Softmax"):
        CrossEncoderSpec.from_folder(folder)


def test_unknown_architectures_and_modules_are_refused_by_name(
    cross_dir: Callable[..., Path], tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "roberta"
    shutil.copytree(cross_dir("bert", 1, "plain"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["XLMRobertaForSequenceClassification"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match="XLMRobertaForSequenceClassification"):
        Reranker(folder)
    config["architectures"] = ["BertForSequenceClassification"]
    config["model_type"] = "distilbert"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match="model_type"):
        Reranker(folder)

    st = tmp_path / "st"
    shutil.copytree(cross_dir("bert", 1, "st6"), st)
    modules = json.loads((st / "modules.json").read_text())
    modules.append({"idx": 1, "name": "1", "path": "1_LogitScore", "type": "my.LogitScore"})
    (st / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelFormatError, match=r"my\.LogitScore"):
        Reranker(st)


def test_checkpoint_missing_the_classifier_is_refused(
    cross_dir: Callable[..., Path], tmp_path: Path
) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "headless"
    shutil.copytree(cross_dir("distilbert", 1, "plain"), folder)
    state = load_file(folder / "model.safetensors")
    del state["pre_classifier.weight"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"pre_classifier\.weight"):
        Reranker(folder)


def test_bad_inputs_are_named(cross_dir: Callable[..., Path]) -> None:
    rr = Reranker(cross_dir("bert", 1, "st6"))
    with pytest.raises(TruncationError, match="pair 3"):
        rr.score(QUERY, PASSAGES, truncation="error")
    with pytest.raises(TypeError, match="input 1"):
        rr.score(QUERY, ["ok", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="query"):
        rr.score(None, ["ok"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="k must be"):
        rr.rank(QUERY, ["a", "b"], k=0)
    with pytest.raises(InputError, match="3"):
        Reranker(cross_dir("bert", 3, "plain")).rank(QUERY, ["a"])
    assert rr.score(QUERY, []).shape == (0,)


def test_sigmoid_is_stable_for_large_logits() -> None:
    logits = np.array([[-1000.0], [0.0], [1000.0], [2.0]], np.float32)
    out = apply_activation(logits, "sigmoid")
    np.testing.assert_allclose(out[:, 0], [0.0, 0.5, 1.0, 1 / (1 + np.exp(-2.0))], rtol=1e-6)
    assert np.isfinite(out).all()
