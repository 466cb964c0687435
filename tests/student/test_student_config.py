"""The student section: a discriminated union on kind (auto / classifier / causal_lm)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from core.base import DistillError
from distill.config import load_config
from student.config import (AutoStudentConfig, CausalLMStudentConfig, ClassifierStudentConfig, SharedStudentConfig,
                            resolve_kind, student_config)


def test_default_is_auto_and_resolves_with_its_subsection():
    cfg = load_config(None, ["student.epochs=2", "student.classifier.pooling=cls", "student.causal_lm.max_new_tokens=7"], env={})
    assert isinstance(cfg.student, AutoStudentConfig) and cfg.student.epochs == 2
    clf = cfg.student.resolve("classifier")
    assert isinstance(clf, ClassifierStudentConfig) and clf.pooling == "cls" and clf.epochs == 2 and clf.kind == "classifier"
    lm = resolve_kind(cfg.student, "causal_lm")
    assert isinstance(lm, CausalLMStudentConfig) and lm.max_new_tokens == 7 and lm.epochs == 2
    assert isinstance(load_config(None, [], env={}).student, AutoStudentConfig)  # no student section at all


def test_concrete_kinds_are_flat_and_every_variant_has_base_model():
    cfg = load_config(None, ["student.kind=causal_lm", "student.max_seq_length=64", "student.base_model=x"], env={})
    assert isinstance(cfg.student, CausalLMStudentConfig) and cfg.student.max_seq_length == 64
    assert student_config(kind="classifier", knn=False).knn is False
    for c in (AutoStudentConfig, ClassifierStudentConfig, CausalLMStudentConfig):
        assert issubclass(c, SharedStudentConfig) and "base_model" in c.model_fields
    with pytest.raises(DistillError, match="causal_lm was asked for"):
        resolve_kind(ClassifierStudentConfig(), "causal_lm")


@pytest.mark.parametrize("override, message", [
    ("student.epocs=3", "unknown key 'student.epocs'"),
    ("student.classifier.poolin=cls", "unknown key 'student.classifier.poolin'"),
    ("student.pooling=cls", "pooling is a classifier option - set student.classifier.pooling"),
    ("student.kind=svm", "student.kind must be one of auto, classifier, causal_lm"),
])
def test_bad_keys_name_the_key(override, message):
    with pytest.raises(DistillError, match=message):
        load_config(None, [override], env={})


def test_kind_specific_key_on_the_other_kind_is_unknown():
    with pytest.raises(DistillError, match="unknown key 'student.max_seq_length'"):
        load_config(None, ["student.kind=classifier", "student.max_seq_length=64"], env={})


def test_config_and_registry_do_not_import_torch():
    code = ("import sys; import student, student.kinds, distill.config; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "from student.kinds import KINDS, student_class; assert set(KINDS) == {'classifier', 'causal_lm'}")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_docs_document_every_variant():
    from distill.config_docs import render

    doc = render()
    for row in ("`student.<auto>.classifier.pooling`", "`student.<auto>.causal_lm.max_seq_length`",
                "`student.<classifier>.pooling`", "`student.<causal_lm>.max_new_tokens`", "`student.<causal_lm>.base_model`"):
        assert row in doc
