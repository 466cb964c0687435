"""Student stage config: a discriminated union on `kind`.

- `kind: classifier` / `kind: causal_lm`: the shared fields plus that kind's own options, flat.
- `kind: auto` (the default): the shared fields plus a `classifier:` and a `causal_lm:` subsection;
  student/train.py picks the kind from the data and `resolve(kind)` turns it into the concrete
  config, so a YAML that leaves the choice to the data can still tune either kind.

Importing this module pulls pydantic only (no torch): the root config imports it.
"""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field, TypeAdapter, model_validator

from core.base import PathField, StrictModel, kind_union


class LoraConfig(StrictModel):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha.")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | None = Field(None, description="Module names LoRA wraps; None picks per kind (classifier: BERT query/key/value/dense; causal LM: all linear layers).")


class SharedStudentConfig(StrictModel):
    """Fields every kind has: the base model, the shared training loop (student/loop.py), LoRA."""

    base_model: str | None = Field(None, description="HF hub id or local path (a .gguf file too, for the causal LM); None uses the bundled offline model for the kind.")
    epochs: float = Field(3.0, gt=0, description="Training epochs.")
    batch_size: int = Field(32, ge=1, description="Training batch size (per process).")
    learning_rate: float = Field(5e-4, gt=0, description="Learning rate for LoRA weights.")
    seed: int = Field(0, description="Random seed.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA settings.")
    val_fraction: float = Field(0.1, ge=0, lt=0.5, description="Share of the training examples held out (stable hash of the id) for validation loss and early stopping.")
    eval_every_steps: int | None = Field(None, ge=1, description="Validate every N optimizer steps; None = once per epoch.")
    early_stopping_patience: int = Field(2, ge=0, description="Stop after this many validations without a better `best_metric` (0 = never stop early); the best checkpoint is kept.")
    best_metric: Literal["val_loss", "val_accuracy"] = Field("val_loss", description="What picks the kept checkpoint and counts toward early stopping (transformers' metric_for_best_model): val_loss (lower), or val_accuracy (higher: the share of validation answers exactly right, ties broken by the lower loss). Encoder students only for val_accuracy; set it when the loss keeps rising from overconfidence while answers still improve (NLU++: the loss plateaued at step 140, accuracy 0.48, and early stopping on it kept that; accuracy reached 0.63 by step 560).")
    checkpoint_every_steps: int = Field(100, ge=1, description="Write a resumable checkpoint (weights, optimizer, step) every N steps under train/checkpoints/.")
    resume: bool = Field(True, description="Resume from train/checkpoints/ when a previous run of this stage was interrupted with the same config.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps with linear LR warmup (then linear decay).")
    max_train_s: float | None = Field(None, gt=0, description="Wall-clock guard: stop the training loop after this many seconds (best weights so far are kept); None = no limit.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where training runs (through accelerate): auto = a GPU when torch sees one, else the CPU. Several GPUs: start the train stage under `accelerate launch` (see README); the model is wrapped in DDP, each process takes its share of every epoch's batches.")
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads; None = auto: the cores not busy right now (CPU use sampled for 1 s), at least 1 - on a shared CPU an oversubscribed 2-thread run measured 3-4x slower than 1 thread, on an idle 2-core one 2 threads ran 1.5-1.7x faster.")


class ClassifierOptions(StrictModel):
    """The encoder classifier's own options (student/classifier.py)."""

    head_learning_rate: float = Field(3e-3, gt=0, description="Learning rate for the classification heads.")
    max_length: int = Field(64, ge=8, description="Max input tokens (the last user turn).")
    pooling: Literal["mean", "cls"] = Field("mean", description="Sentence embedding = attention-masked mean of token states (what MiniLM was trained for) or the [CLS] state.")
    train_layers: int | None = Field(3, ge=1, description="LoRA only in the top N encoder layers; the frozen layers below run once per example and their output is cached, so an epoch costs about N/num_layers of a full pass (CPU). None = LoRA in every layer, no cache.")
    linear_probe_init: bool = Field(True, description="Fit each head on frozen embeddings before LoRA training, so training starts at linear-probe accuracy.")
    encoder_dropout: float | None = Field(0.0, ge=0, lt=1, description="Dropout inside the encoder while fine-tuning (None = the model's own, 0.1 for BERT). 0 keeps train-time features equal to those the linear-probe head was fit on; with 0.1 accuracy first dipped ~3 points.")
    probe_weight_decay: float = Field(3e-3, ge=0, description="L2 penalty of the linear-probe fit (on standardised features); larger keeps the warm-started head from memorising the training set, leaving signal for fine-tuning.")
    interpolate: bool = Field(True, description="After training, blend probe and fine-tuned weights (LoRA B and heads scaled by a in {0, .25, .5, .75, 1}; a=0 is the linear probe) and keep the a with the lowest validation loss (WiSE-FT).")
    knn: bool = Field(True, description="Mix the head's probabilities with a kNN vote over the training examples' embeddings (k, temperature and weight chosen on the validation split, weight 0 = head alone; see student/knn.py). On Banking77 worth about +1 point.")
    span_tags: Literal["factored", "per_name"] = Field("factored", description="The span tagger's head (student/span.py): factored = P(O/B/I) x P(slot name), so where a slot begins and ends is learned from every slot and the name apart; per_name = B-/I- tags per name, each learned from that name's own examples. NLU++ holdout: slot micro-F1 0.811 -> 0.843, exact JSON 0.646 -> 0.654 (factored).")
    lexical: bool = Field(False, description="Also fit a TF-IDF word + character n-gram linear model per categorical field on the training rows and mix its probabilities in, at a weight chosen per field by validation log loss (0 = off; see student/lexical.py). Its errors differ from the encoder's: on Banking77 the cascade's coverage at 99 % agreement rose ~3 points. Costs ~10-40 s of training and ~0.5 ms per request.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing.")
    max_labels: int = Field(500, ge=2, description="A JSON field / bare label with more distinct values than this is not categorical (kind auto then picks causal_lm).")
    min_examples_per_label: float = Field(2.0, ge=1, description="Mean examples per distinct value must reach this, else the outputs are free text (kind auto then picks causal_lm).")
    predict_batch_size: int = Field(64, ge=1, description="Batch size for predict() and validation.")


class CausalLMOptions(StrictModel):
    """The causal-LM student's own options (student/causal_lm.py)."""

    max_seq_length: int = Field(256, ge=16, description="Max prompt+response tokens per training example; the prompt is left-truncated, a response that alone does not fit is cut.")
    max_new_tokens: int = Field(128, ge=1, description="Generation limit per answer in predict() (greedy, stops at the chat template's end-of-turn token).")
    bake_system_prompt: bool = Field(True, description="Leave the teacher-only system prompt out of the student's input (train and predict); figures report prompt tokens saved per request.")
    generate_batch_size: int = Field(16, ge=1, description="Conversations per generate() call in predict() (left-padded, grouped by length).")
    cache_dir: str | None = PathField(None, description="Where the bundled GGUF model is converted to safetensors once; None = $DISTILL_CACHE_DIR or ~/.cache/distill.")
    constrained_decoding: Literal["auto", "on", "off"] = Field("auto", description="Generate under the answers' JSON schema (llguidance token masks), so answers that do not parse or break the schema (missing keys, out-of-enum values) cannot be produced; only max_new_tokens can still cut one. auto = when the run has a usable schema (json_schema below, else the one the filter inferred), on = require one, off = free decoding. Kept in student.json, so eval and serving decode the same way.")
    json_schema: str | None = PathField(None, "JSON Schema file the answers follow, for constrained decoding (usually the file filter.json_schema names); None = the schema the filter stage inferred, if any.")
    serve_engine: Literal["auto", "hf", "llamacpp"] = Field("auto", description="Engine every server of the model runs (recorded in student.json; `distill serve --engine` overrides): hf = transformers; llamacpp = llama.cpp on the student's GGUF export (llama-cpp-python; student/llamacpp.py); auto = llamacpp when it is installed and its answers on (up to 128) validation examples agree with the teacher within 0.2 points of hf's, else hf.")


class ClassifierStudentConfig(ClassifierOptions, SharedStudentConfig):  # field order: shared, options, kind
    kind: Literal["classifier"] = Field("classifier", description="Student kind: a small encoder + LoRA + one head per categorical output field.")


class CausalLMStudentConfig(CausalLMOptions, SharedStudentConfig):
    kind: Literal["causal_lm"] = Field("causal_lm", description="Student kind: a causal LM + LoRA trained on the teacher's answer tokens.")


_OPTIONS = {"classifier": ClassifierOptions, "causal_lm": CausalLMOptions}
_CONCRETE: dict[str, type[SharedStudentConfig]] = {"classifier": ClassifierStudentConfig, "causal_lm": CausalLMStudentConfig}


class AutoStudentConfig(SharedStudentConfig):
    kind: Literal["auto"] = Field("auto", description="Student kind: chosen from the data - classifier when every teacher output is categorical (JSON of bounded-cardinality fields, or a bare label), else causal_lm.")
    classifier: ClassifierOptions = Field(default_factory=ClassifierOptions, description="Options used when the data picks the classifier.")
    causal_lm: CausalLMOptions = Field(default_factory=CausalLMOptions, description="Options used when the data picks the causal LM.")

    @model_validator(mode="before")
    @classmethod
    def _kind_option_at_top(cls, data: Any) -> Any:
        # A kind's option written flat under kind auto would otherwise read as a bare "unknown
        # key": say where it belongs.
        if isinstance(data, dict):
            for key in data:
                for kind, opts in _OPTIONS.items():
                    if key in opts.model_fields and key not in SharedStudentConfig.model_fields:
                        raise ValueError(f"unknown key {key!r}: with kind auto, {key} is a {kind} option - set student.{kind}.{key}, or set student.kind: {kind}")
        return data

    def resolve(self, kind: str) -> "ClassifierStudentConfig | CausalLMStudentConfig":
        """The concrete config for `kind`: the shared fields plus that kind's subsection."""
        shared = {k: getattr(self, k) for k in SharedStudentConfig.model_fields}
        return _CONCRETE[kind](kind=kind, **shared, **dict(getattr(self, kind)))


StudentConfig = kind_union("student", "auto", {"auto": AutoStudentConfig, "classifier": ClassifierStudentConfig,
                                                "causal_lm": CausalLMStudentConfig})
"""The `student` section type (the root config's field): one of the three variants above."""

AnyStudentConfig = Union[AutoStudentConfig, ClassifierStudentConfig, CausalLMStudentConfig]
ConcreteStudentConfig = Union[ClassifierStudentConfig, CausalLMStudentConfig]

_ADAPTER: TypeAdapter = TypeAdapter(StudentConfig)


def student_config(data: dict | str | None = None, **kw: Any) -> AnyStudentConfig:
    """Validate a student section (a dict, a JSON string, or keyword arguments) into its variant."""
    if isinstance(data, str):
        return _ADAPTER.validate_json(data)
    return _ADAPTER.validate_python({**(data or {}), **kw})


def resolve_kind(cfg: AnyStudentConfig, kind: str) -> ConcreteStudentConfig:
    """The concrete config training uses once the kind is known."""
    if isinstance(cfg, AutoStudentConfig):
        return cfg.resolve(kind)
    if cfg.kind != kind:
        from core.base import DistillError

        raise DistillError(f"student.kind={cfg.kind}, but {kind} was asked for")
    return cfg
