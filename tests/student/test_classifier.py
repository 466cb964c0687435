"""Classifier student + train stage on a tiny BERT (hidden 32) built in-test: seconds on one core."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from core.base import write_jsonl  # noqa: E402
from core.rundir import RunDir  # noqa: E402
from student import load_student  # noqa: E402
from student.base import Example  # noqa: E402
from student.config import AutoStudentConfig, ClassifierOptions, ClassifierStudentConfig  # noqa: E402
from student.models import make_tiny_encoder  # noqa: E402
from student.train import choose_kind, run_train, split_validation  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# Two JSON fields; the teacher writes compact JSON with a non-alphabetical key order, so exact
# rendering is actually tested.
PHRASES = {
    "card_arrival": ["where is my card", "card has not arrived", "still waiting for my card"],
    "refund": ["i want a refund", "give my money back", "refund the purchase"],
    "pin_blocked": ["my pin is blocked", "pin locked out", "cannot use my pin"],
    "exchange_rate": ["what is the exchange rate", "rate for euros", "currency conversion rate"],
}
URGENCY = {"now": "high", "asap": "high", "today": "high", "later": "low", "sometime": "low", "whenever": "low"}


def make_records(n: int, seed: int = 0, system: str = "Classify the message.") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        intent = rng.choice(sorted(PHRASES))
        word = rng.choice(sorted(URGENCY))
        text = f"{rng.choice(PHRASES[intent])} {word}"
        out = json.dumps({"urgency": URGENCY[word], "intent": intent}, separators=(",", ":"))
        rows.append({"id": f"r{seed}-{i}", "split": "train", "status": "ok", "response": out,
                     "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}]})
    return rows


def corpus() -> list[str]:
    return [p for ps in PHRASES.values() for p in ps] + [" ".join(URGENCY)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny") / "enc", corpus())


def tiny_cfg(model: Path, auto: bool = False, **kw) -> ClassifierStudentConfig | AutoStudentConfig:
    """kind classifier; auto=True: the same settings as kind auto (classifier options in their
    subsection), so the kind is chosen from the data."""
    # Tuned for the random tiny encoder: high LRs, LoRA on the top layer only (the prefix-cache path).
    base = dict(base_model=str(model), epochs=8, batch_size=16, learning_rate=2e-2, head_learning_rate=5e-2,
                num_threads=1, checkpoint_every_steps=1000, early_stopping_patience=0, train_layers=1,
                label_smoothing=0.1, encoder_dropout=None,  # pinned: the values this tiny setup was tuned with
                lora={"r": 8, "alpha": 16, "dropout": 0.0})
    base.update(kw)
    if not auto:
        return ClassifierStudentConfig(**base)
    opts = {k: base.pop(k) for k in list(base) if k in ClassifierOptions.model_fields}
    return AutoStudentConfig(**base, classifier=opts)


def make_run(tmp_path: Path, rows: list[dict]) -> RunDir:
    rd = RunDir.create(tmp_path / "runs", "t")
    write_jsonl(rd.path / "filter" / "kept.jsonl", rows + [{**rows[0], "id": "hold-1", "split": "holdout"}])
    return rd


def lora_weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "adapter" / "adapter_model.safetensors"))


def test_trains_from_scratch_loss_drops_lora_changes(tmp_path, tiny_model):
    rd = make_run(tmp_path, make_records(240))
    m = run_train(tiny_cfg(tiny_model, linear_probe_init=False), rd)
    assert m["kind"] == "classifier" and m["train_examples"] + m["val_examples"] == 240  # holdout row excluded
    losses = m["train_losses"]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > 1.5 and last < 0.5 * first, (first, last)  # ln(4)+ln(2) ~ 2.08 at the start
    assert m["val_accuracy"] >= 0.9
    w = lora_weights(rd.path / "train" / "model")
    b = [v for k, v in w.items() if "lora_B" in k]
    assert b and all(v.abs().sum() > 0 for v in b)  # LoRA B starts at zero: non-zero = trained
    assert all(".layer.1." in k for k in w)  # train_layers=1: LoRA only in the top layer
    st = rd.stage("train")
    assert st["counts"] == {"train_examples": m["train_examples"], "val_examples": m["val_examples"]}
    assert {"kind", "steps", "examples_per_s", "train_loss", "val_loss", "wall_s"} <= set(st["figures"])
    assert (rd.path / "train" / "loss_curve.png").stat().st_size > 1000
    assert json.loads((rd.path / "train" / "metrics.json").read_text())["steps"] == m["steps"]
    assert not (rd.path / "train" / "checkpoints").exists()
    knn = m["finalize"]["knn"]  # chosen on the val split; saved with the model only when it is used
    meta = json.loads((rd.path / "train" / "model" / "student.json").read_text())
    assert meta.get("knn", {}).get("lambda", 0.0) == knn["lambda"]
    assert (rd.path / "train" / "model" / "knn.safetensors").is_file() == (knn["lambda"] > 0)


def test_save_load_roundtrip_and_exact_rendering(tmp_path, tiny_model):
    from student.classifier import ClassifierStudent

    rows = make_records(200, seed=1)
    cfg = tiny_cfg(tiny_model, train_layers=None)  # all layers (no prefix cache) path
    ex = [Example(r["id"], r["messages"], r["response"]) for r in rows]
    st = ClassifierStudent.create(cfg, ex)
    st.warm_start(ex)
    opt = torch.optim.AdamW(st.param_groups(cfg))
    for b in st.prepare_batches(ex, 16, 0, 0) + st.prepare_batches(ex, 16, 0, 1):
        st.train_mode(True)
        loss = st.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    convs = [r["messages"] for r in rows[:50]] + [[{"role": "user", "content": "unseen words entirely"}]]
    before = st.predict(convs)
    st.save(tmp_path / "m")
    loaded = load_student(tmp_path / "m")
    assert loaded.kind == "classifier" and json.loads((tmp_path / "m" / "student.json").read_text())["kind"] == "classifier"
    assert loaded.predict(convs) == before
    assert loaded.predict([]) == []
    # Exact teacher text (compact separators, urgency before intent), whatever the label chosen.
    teacher_texts = {json.dumps({"urgency": u, "intent": i}, separators=(",", ":")) for u in ("high", "low") for i in PHRASES}
    assert all(p in teacher_texts for p in before)
    assert sum(p == r["response"] for p, r in zip(before, rows[:50])) >= 25  # and it learned something


def test_prefix_cache_matches_full_forward(tiny_model):
    from student.classifier import ClassifierStudent

    rows = make_records(40, seed=2)
    ex = [Example(r["id"], r["messages"], r["response"]) for r in rows]
    st = ClassifierStudent.create(tiny_cfg(tiny_model, train_layers=1), ex)
    assert st.frozen_layers == 1
    for n, p in st.encoder.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.1)  # make LoRA matter
    st.train_mode(False)
    ids, targets = st._tensors(ex)
    with torch.inference_mode():
        full = st.embed(st.collate(ids, targets))
        cached = st.embed(st._batches(ex, [list(range(len(ex)))])[0])
    assert torch.allclose(full, cached, atol=1e-5)


def test_plain_label_outputs_and_kind_choice(tmp_path, tiny_model):
    rows = make_records(160, seed=3)
    for r in rows:
        r["response"] = json.loads(r["response"])["intent"]  # bare label, not JSON
    rd = make_run(tmp_path, rows)
    m = run_train(tiny_cfg(tiny_model, auto=True, epochs=4), rd)  # kind auto: the data picks the classifier
    assert m["kind"] == "classifier" and m["config"]["kind"] == "classifier" and m["config"]["label_smoothing"] == 0.1
    fin = m["finalize"]  # probe/fine-tuned blend chosen on validation loss
    # Two asserts: as one `a and b or c` the alpha check was skipped whenever c held.
    assert fin["alpha"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert fin["val_loss"] == pytest.approx(min(fin["grid"].values()), abs=1e-4)
    st = load_student(rd.path / "train" / "model")
    preds = st.predict([r["messages"] for r in rows[:20]])
    assert preds == [r["response"] for r in rows[:20]]
    free = [Example(str(i), [], f"Here is a long free-text answer number {i}.") for i in range(50)]
    assert choose_kind(AutoStudentConfig(), free) == "causal_lm"
    assert choose_kind(AutoStudentConfig(), [Example(r["id"], r["messages"], r["response"]) for r in rows]) == "classifier"
    assert choose_kind(AutoStudentConfig(classifier={"max_labels": 3}), [Example(r["id"], r["messages"], r["response"]) for r in rows]) == "causal_lm"


def test_validation_split_is_stable_and_disjoint():
    ex = [Example(f"id{i}", [], "x") for i in range(1000)]
    tr, va = split_validation(ex, 0.1)
    tr2, va2 = split_validation(list(reversed(ex)), 0.1)
    assert {e.id for e in va} == {e.id for e in va2} and not ({e.id for e in tr} & {e.id for e in va})
    assert 60 < len(va) < 140


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from student.classifier import ClassifierStudent
    from student.config import student_config
    from student.train import run_train
    from core.rundir import RunDir
    if sys.argv[3] == "slow":  # make the kill land mid-training, deterministically
        orig = ClassifierStudent.loss
        def slow(self, b):
            time.sleep(0.05)
            print("step", flush=True)  # the parent counts these: it kills on an event, not after a sleep
            return orig(self, b)
        ClassifierStudent.loss = slow
    cfg = student_config(sys.argv[2])
    m = run_train(cfg, RunDir(sys.argv[1]))
    print("RESULT " + json.dumps({k: m[k] for k in ("steps", "total_steps", "resumed_from_step")} | {"n_losses": len(m["train_losses"])}))
    """
)


def test_resume_after_sigkill_continues_step_counter(tmp_path, tiny_model):
    rd = make_run(tmp_path, make_records(200, seed=4))
    cfg = tiny_cfg(tiny_model, epochs=3, batch_size=8, checkpoint_every_steps=10, early_stopping_patience=0)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    ckpt = rd.path / "train" / "checkpoints" / "last.pt"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(rd.path), cfg.model_dump_json(), "slow"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not ckpt.exists():
            time.sleep(0.1)
        assert ckpt.exists(), "no checkpoint written"
        for _ in range(15):  # let it train on past the checkpoint (counted steps, not a sleep)
            child.stdout.readline()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    saved = torch.load(ckpt, weights_only=False)["state"]["step"]
    assert saved >= 10 and saved % 10 == 0
    assert not (rd.path / "train" / "model").exists()
    out = subprocess.run([sys.executable, "-c", CHILD, str(rd.path), cfg.model_dump_json(), "fast"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert res["resumed_from_step"] == saved < res["total_steps"]
    assert res["steps"] == res["total_steps"]  # the counter continued from the checkpoint, not from 0
    assert res["n_losses"] == res["total_steps"]  # loss history carried over too
    assert load_student(rd.path / "train" / "model").kind == "classifier"


@pytest.mark.slow
def test_two_processes_share_the_epoch_and_average_gradients(tmp_path, tiny_model):
    """Data-parallel training through accelerate (2 CPU processes, gloo): each takes half of every
    epoch's batches, DDP averages gradients, only the main process writes the model, and it learns."""
    rows = make_records(160, seed=5)
    rd = make_run(tmp_path, rows)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(Path(__file__).with_name("ddp_train_proc.py")), str(rd.path), str(tiny_model)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    main = [r for r in results if r["steps"] is not None]
    assert len(results) == 2 and len(main) == 1  # one writer
    assert main[0]["processes"] == 2 and main[0]["steps"] == 4 * 5  # 160 rows / 16 per batch = 10 batches, 5 each
    assert main[0]["wrapped_as"] == "DistributedDataParallel"  # accelerate.prepare: DDP averages the gradients
    student = load_student(rd.path / "train" / "model")
    preds = student.predict([r["messages"] for r in rows[:40]])
    assert sum(p == r["response"] for p, r in zip(preds, rows[:40])) >= 36


def test_linear_probe_is_saved_and_scored_beside_the_student(tmp_path, tiny_model):
    """The train stage keeps the no-fine-tuning comparator (frozen encoder + the probe heads) and
    the eval scores it on the holdout with a paired interval and a plain verdict."""
    from core.base import read_jsonl
    from eval.config import EvalConfig
    from eval.probe_baseline import attach_probe_baseline

    rows = make_records(240, seed=7)
    rd = make_run(tmp_path, rows)
    m = run_train(tiny_cfg(tiny_model, epochs=3, val_fraction=0.0), rd)  # no val: the student is the tuned end
    probe_dir = rd.path / "train" / "probe"
    assert [v for k, v in lora_weights(probe_dir).items() if "lora_B" in k and v.abs().sum() > 0] == []  # encoder untouched
    assert any(v.abs().sum() > 0 for k, v in lora_weights(rd.path / "train" / "model").items() if "lora_B" in k)

    hold = make_records(60, seed=8)
    student = load_student(rd.path / "train" / "model")
    preds = student.predict([r["messages"] for r in hold])
    write_jsonl(rd.path / "eval" / "predictions.jsonl",
                [{"messages": r["messages"], "teacher": r["response"], "student": p} for r, p in zip(hold, preds)])
    hits = [float(p == r["response"]) for r, p in zip(hold, preds)]
    report = {"metrics": {}, "intervals": {}, "details": {"agreement_hits": hits}}
    attach_probe_baseline(EvalConfig(bootstrap_samples=200), rd, report)
    probe = load_student(probe_dir).predict([r["messages"] for r in hold])
    assert report["metrics"]["probe_baseline_agreement"] == sum(p == r["response"] for r, p in zip(hold, probe)) / 60
    assert report["metrics"]["agreement_vs_probe_baseline_diff"] == pytest.approx(sum(hits) / 60 - report["metrics"]["probe_baseline_agreement"])
    pb = report["probe_baseline"]
    assert pb["n"] == 60 and "linear-probe baseline" in pb["verdict"] and f"same {m['train_examples']} kept" in pb["method"]
    assert len(list(read_jsonl(rd.path / "eval" / "predictions.jsonl"))) == 60
