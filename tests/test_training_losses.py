"""Every training loss against sentence-transformers' on the same tiny model, batch and parameters:
the loss value and every parameter's gradient agree within 1e-6."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("sentence_transformers")

QUERIES = [
    "how do planes stay in the air",
    "what is the capital of france",
    "best way to cook rice",
    "why is the sky blue",
    "who wrote hamlet",
]
POSITIVES = [
    "Wings make lift because air moves faster over the top.",
    "Paris is the capital and largest city of France.",
    "Rinse the rice, then simmer it with twice its volume of water.",
    "Rayleigh scattering makes short blue wavelengths spread across the sky.",
    "Hamlet is a tragedy written by William Shakespeare.",
]
NEGATIVES = [
    "Birds flap their wings to fly.",
    "Lyon is a city in France.",
    "Pasta is boiled in salted water.",
    "Sunsets look red.",
    "Macbeth is another of his plays.",
]
NEGATIVES2 = [
    "Helicopters use rotors.",
    "Berlin is the capital of Germany.",
    "Bread is baked.",
    "The sea is blue too.",
    "Dickens wrote novels.",
]
SCORES = [4.5, 0.5, 3.0, 2.0, 5.0]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Small training steps on one thread: OpenMP workers spinning on a shared 2-core machine
    made them many times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class _AsSentenceTransformer(torch.nn.Module):
    """Our module as a sentence-transformers module, so that its losses run on our model."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        emb = self.module(features["input_ids"], features["attention_mask"])
        return dict(features, sentence_embedding=emb)


class Pair:
    """One tiny model, used by sentence-transformers' losses and by ours in turn."""

    def __init__(self, folder: Path) -> None:
        from sentence_transformers import SentenceTransformer

        from distilmarco.model.sentence import load_sentence_module
        from distilmarco.model.st_format import SentenceModelSpec
        from distilmarco.tokenizer import Tokenizer

        spec = SentenceModelSpec.from_folder(folder)
        # float64, so that rounding in the model cannot hide or fake a difference in the loss
        self.ours = load_sentence_module(spec).double().train()
        self.st = SentenceTransformer(modules=[_AsSentenceTransformer(self.ours)], device="cpu")
        self.tokenizer = Tokenizer.from_folder(
            spec.transformer_folder, spec.max_seq_length, spec.do_lower_case
        )

    def batch(self, columns: list[list[str]], labels: Any = None) -> Any:
        from distilmarco.training.batch import collate

        return collate(self.tokenizer, columns, labels)

    def embed(self, tokens: Any) -> torch.Tensor:
        return self.ours(tokens.ids, tokens.mask)

    def grads(self) -> dict[str, torch.Tensor]:
        out = {n: p.grad.clone() for n, p in self.ours.named_parameters() if p.grad is not None}
        self.ours.zero_grad(set_to_none=True)
        return out


def _check(
    pair: Pair,
    st_loss: torch.nn.Module,
    our_loss: Any,
    columns: list[list[str]],
    labels: Any = None,
    *,
    use_backward: bool = False,
) -> None:
    batch = pair.batch(columns, labels)
    if batch.labels is not None:
        batch = type(batch)(batch.columns, batch.labels.double())
    features = [{"input_ids": c.ids, "attention_mask": c.mask} for c in batch.columns]
    expected = st_loss(features, batch.labels)
    expected.backward()
    theirs = pair.grads()
    if use_backward:
        got = our_loss.backward(pair.embed, batch)
    else:
        got = our_loss.compute(pair.embed, batch)
        got.backward()
    ours = pair.grads()
    assert float(got.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)
    assert float(expected.detach()) > 0.01  # a loss that could differ
    assert set(ours) == set(theirs) and len(ours) > 10
    for name, grad in ours.items():
        diff = float((grad - theirs[name]).abs().max())
        assert diff <= 1e-6, (name, diff, float(grad.abs().max()))
    assert max(float(g.abs().max()) for g in ours.values()) > 1e-3  # gradients that could differ


@pytest.fixture()
def pair(tiny_model_dir: Path) -> Pair:
    return Pair(tiny_model_dir)


@pytest.fixture()
def dense_pair(make_model: Callable[..., Path]) -> Pair:
    return Pair(make_model("tiny-bert-cls-dense", arch="bert", pooling="cls", dense=16))


@pytest.mark.parametrize("negatives", [0, 1, 2])
def test_mnrl_matches_sentence_transformers(pair: Pair, negatives: int) -> None:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from distilmarco.training.losses import MNRL

    columns = [QUERIES, POSITIVES, NEGATIVES, NEGATIVES2][: 2 + negatives]
    _check(pair, MultipleNegativesRankingLoss(pair.st, scale=20.0), MNRL(20.0, "cosine"), columns)


def test_mnrl_dot_product_on_a_bert_with_dense_head(dense_pair: Pair) -> None:
    from sentence_transformers import util
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from distilmarco.training.losses import MNRL

    st_loss = MultipleNegativesRankingLoss(dense_pair.st, scale=20.0, similarity_fct=util.dot_score)
    _check(dense_pair, st_loss, MNRL(20.0, "dot"), [QUERIES, POSITIVES, NEGATIVES])


@pytest.mark.parametrize("mini_batch_size", [2, 5])
def test_cached_mnrl_matches_sentence_transformers(pair: Pair, mini_batch_size: int) -> None:
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    from distilmarco.training.losses import CachedMNRL

    st_loss = CachedMultipleNegativesRankingLoss(
        pair.st, scale=20.0, mini_batch_size=mini_batch_size
    )
    ours = CachedMNRL(20.0, "cosine", mini_batch_size)
    _check(pair, st_loss, ours, [QUERIES, POSITIVES, NEGATIVES], use_backward=True)


def test_cached_mnrl_equals_plain_mnrl(pair: Pair) -> None:
    """The GradCache passes give the gradients of MNRL on the whole batch."""
    from distilmarco.training.losses import MNRL, CachedMNRL

    batch = pair.batch([QUERIES, POSITIVES, NEGATIVES])
    plain = MNRL().backward(pair.embed, batch)
    want = pair.grads()
    cached = CachedMNRL(mini_batch_size=2).backward(pair.embed, batch)
    assert float(cached) == pytest.approx(float(plain), abs=1e-6)
    for name, grad in pair.grads().items():
        torch.testing.assert_close(grad, want[name], atol=1e-6, rtol=0)


def test_cosent_matches_sentence_transformers(pair: Pair) -> None:
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    from distilmarco.training.losses import CoSENT

    _check(pair, CoSENTLoss(pair.st, scale=20.0), CoSENT(20.0), [QUERIES, POSITIVES], SCORES)


@pytest.mark.parametrize("negatives", [1, 2])
def test_margin_mse_matches_sentence_transformers(pair: Pair, negatives: int) -> None:
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss

    from distilmarco.training.losses import MarginMSE

    columns = [QUERIES, POSITIVES, NEGATIVES, NEGATIVES2][: 2 + negatives]
    margins = [[1.5 + 0.5 * i + k for k in range(negatives)] for i in range(len(QUERIES))]
    _check(pair, MarginMSELoss(pair.st), MarginMSE("dot"), columns, margins)


@pytest.mark.parametrize("per_column", [False, True])
def test_mse_matches_sentence_transformers(pair: Pair, per_column: bool) -> None:
    from sentence_transformers.sentence_transformer.losses import MSELoss

    from distilmarco.training.losses import MSE

    gen = torch.Generator().manual_seed(3)
    shape = (len(QUERIES), 2, 32) if per_column else (len(QUERIES), 32)
    teacher = torch.randn(shape, generator=gen).tolist()
    _check(pair, MSELoss(pair.st), MSE(), [QUERIES, POSITIVES], teacher)


def test_cosent_ignores_pairs_with_equal_labels() -> None:
    """Hand-checked: with labels [1, 1, 2] only pairs (0, 2) and (1, 2) count."""
    from distilmarco.training.losses import cosent_loss

    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    s = 20.0 * torch.tensor([1.0, 0.0, 2**-0.5])
    want = torch.log(1 + torch.exp(s[0] - s[2]) + torch.exp(s[1] - s[2]))
    got = cosent_loss(a, b, torch.tensor([1.0, 1.0, 2.0]))
    assert float(got) == pytest.approx(float(want), rel=1e-6)
