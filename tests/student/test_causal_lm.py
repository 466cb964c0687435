"""Causal-LM student on a tiny Llama (hidden 32, 2 layers) with a tokenizer trained in-test: no downloads."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from student.config import CausalLMStudentConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = (  # SmolLM2's template: injects a default system prompt when none is given
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SYSTEM = "You label fruit colours. Answer with JSON only: {\"colour\": ...}. Allowed colours: red, yellow, green."
FRUIT = {"apple": "red", "banana": "yellow", "lime": "green", "cherry": "red", "lemon": "yellow", "pear": "green"}


def make_examples(n: int) -> list[dict]:
    names = list(FRUIT)
    out = []
    for i in range(n):
        f = names[i % len(names)]
        out.append({"id": f"ex{i}", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"What colour is a {f} number {i}?"}],
                    "response": json.dumps({"colour": FRUIT[f]})})
    return out


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-llama")
    corpus = [SYSTEM, TEMPLATE] + [m["content"] for e in make_examples(12) for m in e["messages"]] + [e["response"] for e in make_examples(12)]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()  # exact round trip, so predict() text is comparable
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>")
    tok.chat_template = TEMPLATE
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      initializer_range=0.5)  # frozen tied lm_head: big enough embeddings that logits can become confident
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def lm_cfg(model_dir: Path, **kw) -> CausalLMStudentConfig:
    base = dict(base_model=str(model_dir), batch_size=4, epochs=4, learning_rate=1e-2, max_seq_length=96,
                max_new_tokens=6, checkpoint_every_steps=1000, early_stopping_patience=0, warmup_ratio=0.0, num_threads=1)
    base.update(kw)
    return CausalLMStudentConfig(**base)


def test_encoding_masks_prompt_and_learns_end_of_turn(tiny_model_dir):
    from transformers import AutoTokenizer

    from student.lm_data import IGNORE, ChatFormat, bake_messages, encode_example, prompt_tokens_saved

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    fmt = ChatFormat.detect(tok)
    assert fmt.eot_text == "<|im_end|>"
    ex = make_examples(1)[0]
    row = encode_example(tok, fmt, ex["messages"], ex["response"], 256)
    labelled = [t for t in row["labels"] if t != IGNORE]
    assert labelled[-1] == fmt.eot_id  # the student learns to stop
    assert tok.decode(labelled[:-1]) == ex["response"]  # loss on the assistant answer only
    assert row["labels"][: len(row["labels"]) - len(labelled)] == [IGNORE] * (len(row["labels"]) - len(labelled))
    baked = bake_messages(ex["messages"], True)
    assert SYSTEM not in json.dumps(baked) and baked[-1] == ex["messages"][-1]
    assert prompt_tokens_saved(tok, [ex["messages"]]) > 10
    short = encode_example(tok, fmt, ex["messages"], ex["response"], 24)  # prompt left-truncated, answer intact
    assert len(short["input_ids"]) == 24 and short["truncated"] and short["labels"][-1] == fmt.eot_id


def test_fit_save_load_predict(tiny_model_dir, tmp_path):
    from student import load_student
    from student.causal_lm import CausalLMStudent

    data = make_examples(24)
    s = CausalLMStudent()
    figs = s.fit(data[:20], data[20:], lm_cfg(tiny_model_dir, epochs=12), tmp_path / "work", progress=False)
    assert figs["trainer"] == "trl.SFTTrainer"
    assert figs["steps"] == 60 and figs["tokens_per_s"] > 0 and figs["val_loss"] is not None
    assert figs["train_loss"] < figs["first_train_loss"] * 0.5  # loss drops
    assert figs["prompt_tokens_saved_per_request"] > 10
    assert [v["step"] for v in figs["val_history"]] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60]  # step 0 + each epoch
    # padding-free batches keep rows apart, and the best weights are the ones kept: the val loss of
    # the fitted model, one row at a time (no packing), is the best validation's figure
    assert _loss_row_by_row(s, data[20:]) == pytest.approx(figs["val_loss"], abs=2e-4)
    lora_b = {k: v for k, v in s.model.named_parameters() if "lora_B" in k}
    assert lora_b and all(float(v.detach().abs().sum()) > 0 for v in lora_b.values())  # lora_B starts at zero

    out = tmp_path / "model"
    s.save(out)
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "merged" / "config.json").is_file()
    loaded = load_student(out)
    assert loaded.kind == "causal_lm"
    batch = [d["messages"] for d in data[20:]]
    ids = s.tok([s.tok.apply_chat_template(batch[0], tokenize=False)], return_tensors="pt")["input_ids"]
    with torch.no_grad():  # merged weights == base + adapter
        s.model.eval()
        trained = s.model(ids.to(s.model.device)).logits.cpu()  # the trained model stays on its training device
        merged = loaded.model(ids).logits
        # float32 rounding only: W x + B(A x) and (W + BA) x round differently, and this tiny
        # model's large weights (initializer_range 0.5) carry that through two layers to ~1e-5 of
        # the logit scale; in float64 the two agree exactly (checked when this tolerance was set).
        assert torch.allclose(trained, merged, rtol=0, atol=5e-5 * float(trained.abs().max()))
        with s.model.disable_adapter():  # and the adapter is really in there: far beyond that tolerance
            assert (s.model(ids).logits - merged).abs().max() > 0.1 * float(trained.abs().max())
    preds = loaded.predict(batch)
    assert len(preds) == 4 and all(isinstance(p, str) for p in preds)
    assert preds == [loaded.predict([b])[0] for b in batch]  # batching (left padding) does not change greedy output
    assert all(len(loaded.tok(p, add_special_tokens=False)["input_ids"]) <= 6 for p in preds)


def _loss_row_by_row(s, rows: list[dict]) -> float:
    """Token-weighted mean answer-token loss, each row alone in its own forward (no packing)."""
    from student.lm_data import bake_messages, encode_example

    total, n = 0.0, 0
    s.model.eval()
    with torch.no_grad():
        for r in rows:
            enc = encode_example(s.tok, s.fmt, bake_messages(r["messages"], True), r["response"], 96)
            ids, labels = torch.tensor([enc["input_ids"]]), torch.tensor([enc["labels"]])
            logits = s.model(input_ids=ids.to(s.model.device)).logits[0, :-1].float().cpu()
            lab = labels[0, 1:]
            total += float(torch.nn.functional.cross_entropy(logits[lab != -100], lab[lab != -100], reduction="sum"))
            n += int((lab != -100).sum())
    return total / n


def test_early_stopping_keeps_best_and_max_train_s(tiny_model_dir, tmp_path):
    from student.causal_lm import CausalLMStudent

    data = make_examples(24)
    # lr 0.3 diverges after the first steps: validation worsens, patience 1 stops, the best is kept
    figs = CausalLMStudent().fit(data[:20], data[20:], lm_cfg(tiny_model_dir, epochs=20, learning_rate=0.3, eval_every_steps=2,
                                 early_stopping_patience=1, checkpoint_every_steps=3), tmp_path / "a", progress=False)
    vals = [v["val_loss"] for v in figs["val_history"]]
    assert figs["stopped_early"] and figs["stop_reason"] == "early_stopping" and figs["steps"] < 100
    assert figs["val_loss"] == pytest.approx(min(vals[1:]), abs=1e-5) and vals[-1] > figs["val_loss"]
    figs = CausalLMStudent().fit(data[:20], data[20:], lm_cfg(tiny_model_dir, epochs=200, max_train_s=1.0),
                                 tmp_path / "b", progress=False)
    assert figs["stopped_early"] and figs["stop_reason"] == "max_train_s=1.0" and figs["steps"] < 1000
    assert figs["val_history"][-1]["step"] == figs["steps"]  # the last step was validated too


def test_prompted_baseline(tiny_model_dir):
    from student.lm_baseline import prompted_baseline_predictor

    data = make_examples(10)
    fn = prompted_baseline_predictor(str(tiny_model_dir), data, k=3, max_new_tokens=4)
    assert len(fn.shots) == 3 and isinstance(fn(data[0]["messages"]), str)
    assert len(fn.predict_batch([d["messages"] for d in data[:3]])) == 3


RESUME_SCRIPT = """
import json, sys, time
sys.path.insert(0, {repo!r})
import trl
from student.config import CausalLMStudentConfig
from student.causal_lm import CausalLMStudent
orig = trl.SFTTrainer.training_step
def slow_step(self, *a, **kw):  # slow enough that the parent can kill it mid-training
    time.sleep(0.1)
    print("step", flush=True)  # the parent counts these: it kills on an event, not after a sleep
    return orig(self, *a, **kw)
trl.SFTTrainer.training_step = slow_step
cfg = CausalLMStudentConfig(**json.loads(sys.argv[1]))
data = json.loads(open(sys.argv[2]).read())
CausalLMStudent().fit(data[:20], data[20:], cfg, sys.argv[3], progress=False)
"""


def test_resume_after_sigkill_is_exact(tiny_model_dir, tmp_path):
    from student.causal_lm import CausalLMStudent
    from student.lm_trainer import last_checkpoint

    cfg = lm_cfg(tiny_model_dir, epochs=10, checkpoint_every_steps=5, batch_size=4, early_stopping_patience=3)  # 50 steps
    data = make_examples(24)
    (tmp_path / "data.json").write_text(json.dumps(data))
    (tmp_path / "run.py").write_text(RESUME_SCRIPT.format(repo=str(REPO)))
    work = tmp_path / "work"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), cfg.model_dump_json(), str(tmp_path / "data.json"), str(work)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpts = work / "checkpoints"
    deadline = time.time() + 120
    while last_checkpoint(ckpts) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    for _ in range(2):  # two more training steps past the checkpoint, so resuming is not the same as finishing
        proc.stdout.readline()
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved_step = json.loads((last_checkpoint(ckpts) / "trainer_state.json").read_text())["global_step"]
    assert 5 <= saved_step < 50

    resumed = CausalLMStudent()
    figs = resumed.fit(data[:20], data[20:], cfg, work, progress=False)
    assert figs["resumed_from_step"] == saved_step and figs["steps"] == 50
    straight = CausalLMStudent()
    ref = straight.fit(data[:20], data[20:], cfg, tmp_path / "straight", progress=False)
    assert ref["resumed_from_step"] is None and figs["val_history"] == ref["val_history"]  # same curve
    a, b = dict(resumed.model.named_parameters()), dict(straight.model.named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a if "lora_" in k)  # bit-identical weights: resume is exact
    # another config does not resume from these checkpoints
    other = CausalLMStudent().fit(data[:20], data[20:], lm_cfg(tiny_model_dir, epochs=1, batch_size=4, checkpoint_every_steps=5),
                                  work, progress=False)
    assert other["resumed_from_step"] is None and other["steps"] == 5


def test_train_stage_with_trl(tiny_model_dir, tmp_path):
    """The train stage drives the causal LM through TRL: model saved, figures written, checkpoints gone."""
    from core.base import write_jsonl
    from core.rundir import RunDir
    from student.kinds import load_student
    from student.train import run_train

    rd = RunDir.create(tmp_path / "runs", "t")
    rd.filter_kept.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(rd.filter_kept, [{**e, "split": "train"} for e in make_examples(30)])
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "yellow", "green"]}}, "required": ["colour"]}
    rd.stage_dir("filter")
    rd.output_schema.write_text(json.dumps({"source": "inferred", "schema": schema}))  # as the filter stage writes it
    out = run_train(lm_cfg(tiny_model_dir, epochs=2, val_fraction=0.2, checkpoint_every_steps=3), rd)
    assert out["kind"] == "causal_lm" and out["wrapped_as"] == "trl.SFTTrainer" and out["steps"] > 0
    assert out["val_loss"] is not None and len(out["train_losses"]) == out["steps"]
    assert not rd.checkpoints_dir.exists()
    loaded = load_student(rd.model_dir)
    assert loaded.kind == "causal_lm" and out["constrained_decoding"]["constrained_decoding"] == "on"
    assert loaded.meta["output_schema"] == schema and all(json.loads(t)["colour"] in FRUIT.values()
                                                          for t in loaded.predict([e["messages"] for e in make_examples(4)]))
