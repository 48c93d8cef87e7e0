"""Distillation: parallel data, the teacher-vector cache, K-layer students, and the folder a
distilled student is saved in (it loads in sentence-transformers with the same vectors)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from distilmarco.errors import FormatError, InputError
from distilmarco.training.parallel import RowRange, read_parallel
from distilmarco.training.student import spread_layers

PAIRS = [
    ("The cat sleeps on the sofa.", "Die Katze schläft auf dem Sofa."),
    ("I like green tea.", "Me gusta el té verde."),
    ("Where is the station?", "Wo ist der Bahnhof?"),
    ("He reads a book every week.", "Él lee un libro cada semana."),
    ("It is raining in Paris.", "Il pleut à Paris."),
    ("We will meet tomorrow.", "Мы встретимся завтра."),
    ("The museum opens at nine.", "博物馆九点开门。"),
    ("My brother plays the piano.", "Mój brat gra na pianinie."),
]


@pytest.fixture()
def pairs_tsv(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\n" for a, b in PAIRS), encoding="utf-8")
    return path


def test_spread_layers_keeps_the_last_layer_and_spreads_evenly() -> None:
    assert spread_layers(6, 3) == [1, 3, 5]
    assert spread_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert spread_layers(6, 6) == [0, 1, 2, 3, 4, 5]
    assert spread_layers(6, 1) == [5]
    with pytest.raises(InputError, match="between 1 and 6"):
        spread_layers(6, 7)


def test_read_parallel_tsv_and_tatoeba_layout(tmp_path: Path, pairs_tsv: Path) -> None:
    (tsv,) = read_parallel(pairs_tsv)
    assert tsv.sources[1] == "I like green tea." and tsv.translations[1] == (
        "Me gusta el té verde.",
    )
    folder = tmp_path / "tatoeba"
    folder.mkdir()
    for lang in ("deu", "spa"):
        (folder / f"tatoeba.{lang}-eng.eng").write_text("one\ntwo\nthree\n", encoding="utf-8")
        (folder / f"tatoeba.{lang}-eng.{lang}").write_text(
            f"{lang}1\n{lang}2\n{lang}3\n", encoding="utf-8"
        )
    sets = read_parallel(folder, RowRange.parse("1:"))
    assert [s.name for s in sets] == ["deu", "spa"]
    assert sets[1].pairs == [("two", "spa2"), ("three", "spa3")]
    (only,) = read_parallel(folder, RowRange.parse("0:1"), ("spa",))
    assert only.pairs == [("one", "spa1")]
    with pytest.raises(InputError, match="no Tatoeba pairs for fra; it has deu, spa"):
        read_parallel(folder, None, ("fra",))
    (folder / "tatoeba.spa-eng.spa").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"has 3 lines but .* has 2"):
        read_parallel(folder)
    with pytest.raises(InputError, match="START:STOP"):
        RowRange.parse("800")


def test_read_parallel_names_an_empty_sentence(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("fine\tgut\nhello\t \n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"bad.tsv:2: an empty sentence \(column 2\)"):
        read_parallel(path)


def test_teacher_vectors_are_cached_by_teacher_and_data(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distilmarco import Encoder
    from distilmarco.training import teacher as teacher_mod

    texts = [a for a, _ in PAIRS]
    first = teacher_mod.teacher_vectors(tiny_model_dir, texts, tmp_path)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    np.testing.assert_allclose(first, Encoder(tiny_model_dir).encode(texts), atol=1e-6)

    def no_encoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached vectors should have been used")

    monkeypatch.setattr("distilmarco.encoder.Encoder.encode", no_encoding)
    again = teacher_mod.teacher_vectors(tiny_model_dir, texts, tmp_path)
    np.testing.assert_array_equal(first, again)
    # Other texts, another key: computing them is attempted (and refused by the stub).
    with pytest.raises(AssertionError, match="cached"):
        teacher_mod.teacher_vectors(tiny_model_dir, texts[:-1], tmp_path)


def test_k_layer_student_is_the_teachers_layers(
    make_model: Callable[..., Path], tmp_path: Path
) -> None:
    """A 2-of-4-layer student written before training equals a transformers model built from
    the teacher's layers 1 and 3 (checked through sentence-transformers)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from distilmarco.model.st_format import SentenceModelSpec
    from distilmarco.training.distill import make_student

    teacher = make_model("distill-teacher-4", layers=4)
    student = make_student(SentenceModelSpec.from_folder(teacher), None, 2, tmp_path)
    init = tmp_path / ".student-init"
    assert json.loads((init / "config.json").read_text())["n_layers"] == 2
    ref = SentenceTransformer(str(teacher), device="cpu")
    layers = ref[0].auto_model.transformer.layer
    ref[0].auto_model.transformer.layer = torch.nn.ModuleList([layers[1], layers[3]])
    texts = [a for a, _ in PAIRS]
    got = SentenceTransformer(str(init), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(got, ref.encode(texts, convert_to_numpy=True), atol=1e-5)
    assert student.spec.transformer.num_layers == 2


@pytest.mark.parametrize("layout", ["st6", pytest.param("st2", marks=pytest.mark.slow)])
def test_distilled_student_loads_in_sentence_transformers(
    make_model: Callable[..., Path], tmp_path: Path, pairs_tsv: Path, layout: str
) -> None:
    from sentence_transformers import SentenceTransformer

    from distilmarco import Encoder
    from distilmarco.training import distill

    teacher = make_model("distill-teacher-4", layers=4)
    out = tmp_path / "student"
    result = distill(
        pairs_tsv,
        teacher,
        out,
        layers=2,
        dev=pairs_tsv,
        eval_steps=2,
        epochs=2,
        batch_size=4,
        lr=1e-3,
        precision="fp32",
        layout=layout,
        cache_dir=tmp_path / "cache",
    )
    assert result.steps == 8  # 16 texts (8 sources, 8 translations) in batches of 4, 2 epochs
    assert [r.step for r in result.evaluations] == [2, 4, 6, 8]
    assert set(result.evaluations[0].metrics) == {"negative_mse", "accuracy"}
    assert not (out / ".student-init").exists() and (out / "README.md").is_file()
    assert json.loads((out / "config.json").read_text())["n_layers"] == 2
    texts = [t for pair in PAIRS for t in pair]
    ours = Encoder(out).encode(texts)
    theirs = SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.slow
def test_distillation_lowers_the_mse(
    make_model: Callable[..., Path], tmp_path: Path, pairs_tsv: Path
) -> None:
    from distilmarco.training import distill

    teacher = make_model("distill-teacher-4", layers=4)
    student = make_model("distill-student-other", layers=2, seed=7)
    result = distill(
        pairs_tsv,
        teacher,
        tmp_path / "s",
        student=student,
        dev=pairs_tsv,
        eval_steps=4,
        epochs=6,
        batch_size=4,
        lr=5e-3,
        warmup=0,
        precision="fp32",
        cache_dir=tmp_path / "cache",
    )
    first, last = result.evaluations[0].metrics, result.evaluations[-1].metrics
    assert last["negative_mse"] > first["negative_mse"]


def test_distill_refuses_a_student_of_another_dimension(
    make_model: Callable[..., Path], tmp_path: Path, pairs_tsv: Path
) -> None:
    from distilmarco.training import distill

    teacher = make_model("distill-teacher-4", layers=4)
    other = make_model("distill-student-dense", dense=16)
    with pytest.raises(InputError, match="student makes 16-d vectors but the teacher 32-d"):
        distill(pairs_tsv, teacher, tmp_path / "x", student=other, cache_dir=tmp_path / "c")
    with pytest.raises(InputError, match="either a student model or a number"):
        distill(pairs_tsv, teacher, tmp_path / "x", cache_dir=tmp_path / "c")
