"""Student stage config: shared by the classifier and causal-LM students (one section, kind-specific
fields say which kind they apply to)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.base import PathField, StrictModel


class LoraConfig(StrictModel):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha.")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | None = Field(None, description="Module names LoRA wraps; None picks per kind (classifier: BERT query/key/value/dense).")


class StudentConfig(StrictModel):
    kind: Literal["auto", "classifier", "causal_lm"] = Field("auto", description="Student kind; auto picks classifier for categorical outputs.")
    base_model: str | None = Field(None, description="HF hub id or local path; None uses the bundled offline model for the kind.")
    epochs: float = Field(3.0, gt=0, description="Training epochs.")
    batch_size: int = Field(32, ge=1, description="Training batch size.")
    learning_rate: float = Field(5e-4, gt=0, description="Learning rate for LoRA weights.")
    head_learning_rate: float = Field(3e-3, gt=0, description="Learning rate for classifier heads.")
    max_length: int = Field(64, ge=8, description="Max input tokens.")
    seed: int = Field(0, description="Random seed.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings.")

    # --- shared training loop ---
    val_fraction: float = Field(0.1, ge=0, lt=0.5, description="Share of the training examples held out (stable hash of the id) for validation loss and early stopping.")
    eval_every_steps: int | None = Field(None, ge=1, description="Validate every N optimizer steps; None = once per epoch.")
    early_stopping_patience: int = Field(2, ge=0, description="Stop after this many validations without a lower val loss (0 = never stop early); the best checkpoint is kept.")
    checkpoint_every_steps: int = Field(100, ge=1, description="Write a resumable checkpoint (weights, optimizer, step) every N steps under train/checkpoints/.")
    resume: bool = Field(True, description="Resume from train/checkpoints/ when a previous run of this stage was interrupted with the same config.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps with linear LR warmup (then linear decay).")
    max_train_s: float | None = Field(None, gt=0, description="Wall-clock guard: stop the training loop after this many seconds (best weights so far are kept); None = no limit.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where training runs (through accelerate): auto = a GPU when torch sees one, else the CPU. Several GPUs: start the train stage under `accelerate launch` (see README); each process takes its share of every epoch's batches and gradients are averaged.")
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads; None = auto: the cores not busy right now (CPU use sampled for 1 s), at least 1 - on a shared CPU an oversubscribed 2-thread run measured 3-4x slower than 1 thread, on an idle 2-core one 2 threads ran 1.5-1.7x faster.")

    # --- classifier student ---
    pooling: Literal["mean", "cls"] = Field("mean", description="Classifier: sentence embedding = attention-masked mean of token states (what MiniLM was trained for) or the [CLS] state.")
    train_layers: int | None = Field(3, ge=1, description="Classifier: LoRA only in the top N encoder layers; the frozen layers below run once per example and their output is cached, so an epoch costs about N/num_layers of a full pass (CPU). None = LoRA in every layer, no cache.")
    linear_probe_init: bool = Field(True, description="Classifier: fit each head on frozen embeddings before LoRA training, so training starts at linear-probe accuracy.")
    encoder_dropout: float | None = Field(0.0, ge=0, lt=1, description="Classifier: dropout inside the encoder while fine-tuning (None = the model's own, 0.1 for BERT). 0 keeps train-time features equal to those the linear-probe head was fit on; with 0.1 accuracy first dipped ~3 points.")
    probe_weight_decay: float = Field(3e-3, ge=0, description="Classifier: L2 penalty of the linear-probe fit (on standardised features); larger keeps the warm-started head from memorising the training set, leaving signal for fine-tuning.")
    interpolate: bool = Field(True, description="Classifier: after training, blend probe and fine-tuned weights (LoRA B and heads scaled by a in {0, .25, .5, .75, 1}; a=0 is the linear probe) and keep the a with the lowest validation loss (WiSE-FT).")
    knn: bool = Field(True, description="Classifier: mix the head's probabilities with a kNN vote over the training examples' embeddings (k, temperature and weight chosen on the validation split, weight 0 = head alone; see student/knn.py). On Banking77 worth about +1 point.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Classifier: cross-entropy label smoothing.")
    max_labels: int = Field(500, ge=2, description="Classifier (kind auto): a JSON field / bare label with more distinct values than this is not categorical -> causal_lm.")
    min_examples_per_label: float = Field(2.0, ge=1, description="Classifier (kind auto): mean examples per distinct value must reach this, else the outputs are free text -> causal_lm.")
    predict_batch_size: int = Field(64, ge=1, description="Classifier: batch size for predict() and validation.")

    # --- causal-LM student ---
    max_seq_length: int = Field(256, ge=16, description="Causal LM: max prompt+response tokens per training example; the prompt is left-truncated, examples whose response alone does not fit are dropped.")
    max_new_tokens: int = Field(128, ge=1, description="Causal LM: generation limit per answer in predict() (greedy, stops at the chat template's end-of-turn token).")
    bake_system_prompt: bool = Field(True, description="Causal LM: leave the teacher-only system prompt out of the student's input (train and predict); figures report prompt tokens saved per request.")
    generate_batch_size: int = Field(16, ge=1, description="Causal LM: conversations per generate() call in predict() (left-padded, grouped by length).")
    cache_dir: str | None = PathField(None, description="Causal LM: where the bundled GGUF model is converted to safetensors once; None = $DISTILL_CACHE_DIR or ~/.cache/distill.")
