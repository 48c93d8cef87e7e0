"""The trainer on a tiny random model: bit-identical weights for the same seed, exact resume, and a
saved folder that sentence-transformers and our Encoder load to the same vectors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import distilmarco
from distilmarco import Encoder
from distilmarco.errors import FormatError, InputError

WORDS = [
    "river",
    "mountain",
    "engine",
    "violin",
    "protein",
    "galaxy",
    "harbor",
    "pencil",
    "tractor",
    "orchid",
    "glacier",
    "lantern",
    "circuit",
    "falcon",
    "meadow",
    "copper",
    "sailor",
    "thunder",
    "quartz",
    "bakery",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Small training steps on one thread: OpenMP workers spinning on a shared 2-core machine
    made them many times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _pairs(path: Path, n: int = 40, negatives: bool = False) -> Path:
    """n distinct (query, positive[, negative]) examples built from a fixed word list."""
    rows = []
    for i in range(n):
        a, b, c = WORDS[i % 20], WORDS[(i * 7 + 3) % 20], WORDS[(i * 3 + 1) % 20]
        row = {"query": f"what is a {a} {i}", "positive": f"a {a} is near the {b} number {i}"}
        if negatives:
            row["negative"] = f"the {c} and the {b} thing {i}"
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


FAST = {"batch_size": 8, "lr": 1e-3, "max_seq_length": 32, "warmup": 2}


def test_same_seed_same_data_gives_bit_identical_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    data = _pairs(tmp_path / "pairs.jsonl")
    runs = [
        distilmarco.train(data, tiny_model_dir, tmp_path / name, loss="mnrl", seed=seed, **FAST)
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]
    assert runs[0].steps == 5 and runs[0].final_loss is not None
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    base = _weights(tiny_model_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another seed: another data order
    assert any(not torch.equal(a[k], base[k]) for k in base)  # training changed the weights


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["mnrl", "cached-mnrl"])
def test_resume_mid_epoch_gives_the_uninterrupted_weights(
    tiny_model_dir: Path, tmp_path: Path, loss: str
) -> None:
    data = _pairs(tmp_path / "pairs.jsonl", negatives=True)
    opts = dict(FAST, epochs=2, seed=3, mini_batch_size=3)
    full = distilmarco.train(data, tiny_model_dir, tmp_path / "full", loss=loss, **opts)
    assert full.steps == 10
    part = distilmarco.train(
        data, tiny_model_dir, tmp_path / "split", loss=loss, stop_at_step=7, **opts
    )
    assert part.steps == 7  # stopped in the middle of the second epoch
    assert (tmp_path / "split" / "checkpoints" / "step-7" / "optimizer.safetensors").is_file()
    assert not (tmp_path / "split" / "model.safetensors").exists()
    done = distilmarco.train(
        data, tiny_model_dir, tmp_path / "split", loss=loss, resume=True, **opts
    )
    assert done.steps == 10 and done.examples == 3 * 8  # only the remaining steps ran
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "split" / "checkpoints").exists()


def test_resume_refuses_other_settings(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _pairs(tmp_path / "pairs.jsonl")
    distilmarco.train(data, tiny_model_dir, tmp_path / "o", stop_at_step=2, seed=1, **FAST)
    with pytest.raises(InputError, match="seed=1"):
        distilmarco.train(data, tiny_model_dir, tmp_path / "o", resume=True, seed=2, **FAST)
    with pytest.raises(InputError, match="nothing to resume"):
        distilmarco.train(data, tiny_model_dir, tmp_path / "new", resume=True, **FAST)


TEXTS = ["how do planes fly", "Wings make lift.", "a completely different sentence", "x"]


@pytest.mark.parametrize("layout", ["st6", "st2"])
@pytest.mark.parametrize("variant", ["distilbert-mean", "bert-cls-dense-normalize"])
def test_trained_folder_loads_in_sentence_transformers_and_encoder(
    make_model: Callable[..., Path], tmp_path: Path, layout: str, variant: str
) -> None:
    from sentence_transformers import SentenceTransformer

    base = (
        make_model("tiny-distilbert-mean")
        if variant == "distilbert-mean"
        else make_model(
            "tiny-bert-cls-dense-norm", arch="bert", pooling="cls", dense=16, normalize=True
        )
    )
    data = _pairs(tmp_path / "pairs.jsonl", n=16)
    out = tmp_path / "model"
    distilmarco.train(data, base, out, loss="mnrl", layout=layout, **FAST)
    for name in (
        "modules.json",
        "config_sentence_transformers.json",
        "sentence_bert_config.json",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "1_Pooling/config.json",
        "README.md",
    ):
        assert (out / name).is_file(), name
    modules = json.loads((out / "modules.json").read_text())
    prefix = "sentence_transformers.models." if layout == "st2" else "sentence_transformers.base."
    assert modules[0]["type"].startswith(prefix)
    cfg = json.loads((out / "config_sentence_transformers.json").read_text())
    assert cfg["similarity_fn_name"] == "cosine"
    card = (out / "README.md").read_text()
    assert "loss: `mnrl`" in card and str(base) in card
    ours = Encoder(out)
    assert ours.spec.layout == layout
    st = SentenceTransformer(str(out), device="cpu")
    want = st.encode(TEXTS, convert_to_numpy=True)
    got = ours.encode(TEXTS)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # the vectors are the trained model's, not the base model's
    assert not np.allclose(got, Encoder(base).encode(TEXTS), atol=1e-4)


def test_cosent_with_dev_keeps_the_best_step_and_logs_every_evaluation(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    rows = [
        {"sentence1": f"the {w} is red", "sentence2": f"a {WORDS[(i * 3) % 20]} {i}",
         "score": float(rng.uniform(0, 5))}
        for i, w in enumerate(WORDS * 2)
    ]  # fmt: skip
    (tmp_path / "sts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = distilmarco.train(
        tmp_path / "sts.jsonl",
        tiny_model_dir,
        tmp_path / "out",
        loss="cosent",
        dev=tmp_path / "sts.jsonl",
        eval_steps=2,
        **FAST,
    )
    log = [json.loads(x) for x in (tmp_path / "out" / "eval_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 5]
    best = max(log, key=lambda r: r["metrics"]["spearman"])
    assert result.best_step == best["step"]
    assert result.best_metric == pytest.approx(best["metrics"]["spearman"])
    # the folder holds the best step's model: evaluating it gives the logged figure
    from distilmarco.evaluation.sts import evaluate_sts, read_pairs

    again = evaluate_sts(Encoder(tmp_path / "out"), read_pairs(tmp_path / "sts.jsonl"))
    assert again.spearman == pytest.approx(best["metrics"]["spearman"], abs=1e-6)


@pytest.mark.parametrize(
    ("content", "loss", "message"),
    [
        ('{"query": "a", "positive": "b"}\n{"query": "c"}\n', "mnrl", r"pairs.jsonl:2: 1 text"),
        ('{"query": "a", "positive": " "}\n', "mnrl", r"pairs.jsonl:1: positive is an empty"),
        ('{"querry": "a", "positive": "b"}\n', "mnrl", r"pairs.jsonl:1: missing field 'query'"),
        ('{"sentence1": "a", "sentence2": "b"}\n', "cosent", r"pairs.jsonl:1: .*numeric 'score'"),
        ('{"sentence1": "a", "sentence2": "b", "score": 7}\n', "cosent", r":1: score 7.0 is out"),
        ('{"query": "a", "positive": "b", "score": "x"}\n', "mnrl", r":1: score 'x' is not a"),
        ('{"query": "a", "positive": "b", "negative": "c"}\n{"query": "d", "positive": "e"}\n',
         "mnrl", r"pairs.jsonl:2: 2 text\(s\), earlier examples have 3"),
        ('{"query": "q", "positive": "p", "negative": "n"}\n', "margin-mse", r":1: .*margins"),
        ("not json\n", "mnrl", r"pairs.jsonl:1: not valid JSON"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_before_training(
    tiny_model_dir: Path, tmp_path: Path, content: str, loss: str, message: str
) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text(content)
    with pytest.raises(FormatError, match=message.replace("is out", "is outside")):
        distilmarco.train(data, tiny_model_dir, tmp_path / "o", loss=loss, score_range=(0, 5))
    assert not (tmp_path / "o").exists()


def test_dev_set_without_positives_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    beir = tmp_path / "dev"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "a doc"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t0\n")
    data = _pairs(tmp_path / "pairs.jsonl")
    with pytest.raises(InputError, match="no query with a relevant document"):
        distilmarco.train(data, tiny_model_dir, tmp_path / "o", dev=beir)
    assert not (tmp_path / "o").exists()


def test_bf16_autocast_trains(tiny_model_dir: Path, tmp_path: Path) -> None:
    from distilmarco.training.trainer import choose_precision

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert choose_precision("auto", "cpu") == ("bf16" if native else "fp32")
    with pytest.raises(InputError, match="fp16 training needs a CUDA GPU"):
        choose_precision("fp16", "cpu")
    data = _pairs(tmp_path / "pairs.jsonl", n=16)
    result = distilmarco.train(data, tiny_model_dir, tmp_path / "o", precision="bf16", **FAST)
    assert result.precision == "bf16" and result.final_loss is not None
    trained, base = _weights(tmp_path / "o"), _weights(tiny_model_dir)
    assert all(v.dtype == torch.float32 for v in trained.values())  # master weights stay fp32
    assert any(not torch.equal(trained[k], base[k]) for k in base)


@pytest.mark.parametrize("loss", ["margin-mse", "mse"])
def test_teacher_losses_train_from_jsonl_labels(
    tiny_model_dir: Path, tmp_path: Path, loss: str
) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(12):
        row: dict[str, object] = {"query": f"query {WORDS[i]} {i}", "positive": f"doc {i}"}
        if loss == "margin-mse":
            row |= {"negative": f"other {WORDS[i + 1]}", "score": [8.0, float(rng.uniform(0, 8))]}
        else:
            row["vector"] = rng.normal(size=32).round(4).tolist()
        rows.append(row)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = distilmarco.train(data, tiny_model_dir, tmp_path / "o", loss=loss, **FAST)
    assert result.steps == 2 and result.final_loss is not None and result.final_loss > 0
