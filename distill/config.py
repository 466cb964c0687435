"""The run config: one typed section per stage, loaded from YAML, overridable by env and CLI.

Precedence (last wins): defaults < YAML file < env DISTILL__SECTION__KEY=value < CLI --set section.key=value.
Values from env/CLI are parsed as YAML scalars, so `--set student.epochs=2` gives a float.
Unknown keys are errors naming the key; secrets are SecretStr and masked in every dump.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from core.base import DistillError, PathField, StrictModel, resolve_paths, stable_hash
from eval.cascade_config import CascadeConfig
from eval.config import EvalConfig, GateConfig
from ingest.config import IngestConfig, SelectConfig
from student.config import AutoStudentConfig, StudentConfig
from teacher.config import TeacherConfig
from teacher.reference.config import ReferenceTeacherConfig
from teacher.filter_config import FilterConfig

ENV_PREFIX = "DISTILL__"


class ApprovalConfig(StrictModel):
    approver: str | None = Field(None, description="Auto-approve as this name (unattended demos only; the log says so loudly). None waits for a human.")
    timeout_s: float = Field(3600, gt=0, description="How long to wait for a human before the candidate is rejected.")
    mode: Literal["auto", "pause", "suspend"] = Field("auto", description="pause: the run waits in its process; suspend: the process exits while waiting (needs a deployment) and the run resumes from the run directory; auto: suspend for deployment runs without an auto-approver, else pause.")


class OrchestrationConfig(StrictModel):
    task_runner: Literal["threads", "dask", "ray"] = Field("threads", description="Prefect task runner for parallel tasks (replay shards): threads, or prefect-dask / prefect-ray when installed.")
    max_workers: int = Field(4, ge=1, description="Threads (or dask workers) for parallel tasks; Prefect's default is unbounded.")
    train_deployment: str | None = Field(None, description="Run the train stage as this Prefect deployment (e.g. 'distill-train/gpu', registered by `distill deploy --train-pool POOL` on a GPU work pool) and wait for it; the run directory must be on storage both workers see. None trains inside the flow's own process.")


class RegistryConfig(StrictModel):
    path: str | None = PathField(None, "Registry directory or fsspec URL (s3://bucket/registry, gs://..., with the matching fsspec backend installed); default <data_dir>/registry.")
    model_name: str = Field("student", description="Name the versions are registered under.")
    app_model_alias: str | None = Field(None, description="The model name the application calls; the generated litellm router maps it to the student with the teacher as fallback. Default: model_name.")
    student_api_base: str = Field("http://127.0.0.1:8000/v1", description="Where the promoted student will be served (`distill serve`), for the generated router config.")


class DistillConfig(StrictModel):
    name: str = Field("distill", description="Run name prefix.")
    data_dir: str = Field(".distill", description="Project-local data directory (Prefect home, runs, registry, replay ledger); relative to the working directory.")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    reference_teacher: ReferenceTeacherConfig = Field(default_factory=ReferenceTeacherConfig, description="The offline reference teacher (demos, tests): when enabled, the run starts it and points teacher.api_base at it.")
    filter: FilterConfig = Field(default_factory=FilterConfig)
    student: StudentConfig = Field(default_factory=AutoStudentConfig, description="The student model and its training (discriminated on `kind`; auto picks from the data).")
    eval: EvalConfig = Field(default_factory=EvalConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    cascade: CascadeConfig = Field(default_factory=CascadeConfig, description="The student answers what it is confident about, the teacher the rest: threshold chosen on the validation split, measured on the holdout, recorded in the registry for `distill serve --cascade`.")
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    select: SelectConfig | None = Field(None, description="Which ingested train prompts to replay (uniform, stratified, diversity); None replays them all.")

    # Resolved at load time, not user-set: paths in the YAML are relative to this directory.
    config_dir: str = Field(".", description="Directory of the config file (set by the loader).")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def runs_path(self) -> Path:
        return self.data_path / "runs"

    @property
    def registry_path(self) -> Path | str:
        """A local directory, or the fsspec URL as given (s3://bucket/registry)."""
        if self.registry.path and "://" in self.registry.path:
            return self.registry.path
        return Path(self.registry.path).expanduser().resolve() if self.registry.path else self.data_path / "registry"

    def public_dump(self) -> dict[str, Any]:
        """JSON-able dump with secrets masked (pydantic prints SecretStr as '**********')."""
        return self.model_dump(mode="json")

    def hash(self) -> str:
        d = self.public_dump()
        d.pop("config_dir", None)
        return stable_hash(d)


def _set_path(d: dict, dotted: str, value: Any, origin: str) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise DistillError(f"{origin}: cannot set {dotted!r}: {k!r} is not a section")
        cur = nxt
    cur[keys[-1]] = value


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None, env: dict[str, str] | None = None) -> DistillConfig:
    data: dict[str, Any] = {}
    config_dir = Path(".").resolve()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DistillError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise DistillError(f"config file {path} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise DistillError(f"config file {path} must hold a mapping at the top level, got {type(loaded).__name__}")
        data = loaded
        config_dir = path.resolve().parent
    if "config_dir" in data:
        raise DistillError(f"{path}: 'config_dir' is set by the loader, remove it from the file")
    env = os.environ if env is None else env
    for key, raw in sorted(env.items()):
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
            _set_path(data, dotted, _parse_scalar(raw), f"env {key}")
    for item in overrides or []:
        if "=" not in item:
            raise DistillError(f"--set {item!r}: expected section.key=value")
        k, v = item.split("=", 1)
        _set_path(data, k.strip(), _parse_scalar(v), f"--set {item}")
    data["config_dir"] = str(config_dir)
    try:
        cfg = DistillConfig.model_validate(data)
    except ValidationError as e:
        raise DistillError(_format_validation(e, path)) from None
    resolve_paths(cfg, config_dir)
    return cfg


def _user_loc(loc: tuple) -> list:
    """The key path as the user writes it: pydantic puts the variant's tag after a field of a
    discriminated union (student.auto.epocs); drop it (student.epocs)."""
    import typing

    out, model = [], DistillConfig
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        out.append(part)
        field = getattr(model, "model_fields", {}).get(part) if isinstance(part, str) else None
        variants = {}  # tag -> model, for a field typed Union[Annotated[Model, Tag(...)], ...]
        for arg in typing.get_args(field.annotation) if field else ():
            inner = typing.get_args(arg)
            variants.update({m.tag: inner[0] for m in inner[1:] if hasattr(m, "tag")})
        if parts and parts[0] in variants:
            model = variants[parts.pop(0)]
        else:
            model = field.annotation if field and isinstance(field.annotation, type) else None
    return out


def _format_validation(e: ValidationError, path: Path | None) -> str:
    where = str(path) if path else "config"
    lines = [f"invalid config ({where}):"]
    for err in e.errors():
        loc = ".".join(str(x) for x in _user_loc(err["loc"]))
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{loc}' (check spelling; see README configuration reference)")
        else:
            lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def dump_yaml(cfg: DistillConfig) -> str:
    return yaml.safe_dump(cfg.public_dump(), sort_keys=False)
