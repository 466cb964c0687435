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


def test_bucketed_batches_cover_everything_deterministically():
    from student.lm_data import bucketed_batches

    lengths = [(i * 37) % 50 + 1 for i in range(103)]
    a = bucketed_batches(lengths, 8, seed=1, epoch=0, mega=4)
    assert a == bucketed_batches(lengths, 8, seed=1, epoch=0, mega=4) != bucketed_batches(lengths, 8, seed=1, epoch=1, mega=4)
    assert sorted(i for b in a for i in b) == list(range(103)) and len(a) == 13
    pad_waste = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in a)
    assert pad_waste < 0.25 * sum(lengths)  # vs ~50 % when batches are random


def test_fit_save_load_predict(tiny_model_dir, tmp_path):
    from student import load_student
    from student.causal_lm import CausalLMStudent

    data = make_examples(24)
    s = CausalLMStudent()
    figs = s.fit(data[:20], data[20:], lm_cfg(tiny_model_dir, epochs=12), tmp_path / "work", progress=False)
    assert figs["steps"] == 60 and figs["tokens_per_s"] > 0 and figs["val_loss"] is not None
    assert figs["train_loss"] < figs["first_train_loss"] * 0.5  # loss drops
    assert figs["prompt_tokens_saved_per_request"] > 10
    lora_b = {k: v for k, v in s.trainable_state().items() if "lora_B" in k}
    assert lora_b and all(float(v.abs().sum()) > 0 for v in lora_b.values())  # lora_B starts at zero

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


def test_prompted_baseline(tiny_model_dir):
    from student.causal_lm import prompted_baseline_predictor

    data = make_examples(10)
    fn = prompted_baseline_predictor(str(tiny_model_dir), data, k=3, max_new_tokens=4)
    assert len(fn.shots) == 3 and isinstance(fn(data[0]["messages"]), str)
    assert len(fn.predict_batch([d["messages"] for d in data[:3]])) == 3


RESUME_SCRIPT = """
import json, sys, time
sys.path.insert(0, {repo!r})
from student.config import CausalLMStudentConfig
from student.causal_lm import CausalLMStudent
orig = CausalLMStudent.loss
def slow_loss(self, batch):  # slow enough that the parent can kill it mid-training
    time.sleep(0.1)
    print("step", flush=True)  # the parent counts these: it kills on an event, not after a sleep
    return orig(self, batch)
CausalLMStudent.loss = slow_loss
cfg = CausalLMStudentConfig(**json.loads(sys.argv[1]))
data = json.loads(open(sys.argv[2]).read())
CausalLMStudent().fit(data[:20], data[20:], cfg, sys.argv[3], progress=False)
"""


def test_resume_after_sigkill(tiny_model_dir, tmp_path):
    from student.causal_lm import CausalLMStudent

    cfg = lm_cfg(tiny_model_dir, epochs=10, checkpoint_every_steps=5, batch_size=4)  # 50 steps
    data = make_examples(24)
    (tmp_path / "data.json").write_text(json.dumps(data))
    (tmp_path / "run.py").write_text(RESUME_SCRIPT.format(repo=str(REPO)))
    work = tmp_path / "work"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py"), cfg.model_dump_json(), str(tmp_path / "data.json"), str(work)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = work / "checkpoints" / "last.pt"
    deadline = time.time() + 40
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    for _ in range(2):  # two more training steps past the checkpoint, so resuming is not the same as finishing
        proc.stdout.readline()
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    saved_step = torch.load(ckpt, weights_only=False)["state"]["step"]
    assert 5 <= saved_step < 50

    figs = CausalLMStudent().fit(data[:20], data[20:], cfg, work, progress=False)
    assert figs["resumed_from_step"] == saved_step and figs["steps"] == 50
