"""Typed run configuration: pydantic sections, strict about keys and types.

Every default lives in YAML: `pipeline/tasks/defaults.yaml` holds what all tasks share and
`<task>.yaml` (beside the task module) the task's own values. A run's config is those two files, then
the user's file (`--config`), then `--set` overrides, validated by the task's config class
(`Task.config_class`), which types the task's `data.options`, `features` and `model` sections.

An unknown key or a wrong value is a `ConfigError` naming the dotted key, e.g.
`train.lr: input should be a valid number` or `model.dropuot: unknown key (did you mean dropout?)`.
The exceptions to "defaults in YAML only" are the sections that describe one table (`data.schema`,
`data.options`, `data.clean`, `data.labeling`): a user file replaces them whole, so their keys carry
neutral defaults here (a CSV with a header, no rule, no labeling function).
"""

from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError
from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError

from pipeline.errors import ConfigError

ColumnType = Literal["int", "float", "string", "category", "bool", "datetime"]
NUMERIC_TYPES = ("int", "float")
SCHEDULES = ("constant", "step", "exp_decay", "cosine", "one_cycle", "warmup_cosine")


def problem(key: str, message: str) -> PydanticCustomError:
    """A validation error at `key`, relative to the section that raises it."""
    return PydanticCustomError("config", message.replace("{", "(").replace("}", ")"), {"key": key})


class Section(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- data -----------------------------------------------------------------------------------------

class TableOptions(Section):
    """Reader options for delimited text (CSV/TSV), and the markers read as missing values."""

    column_names: list[str] | None = None  # for files without a header line
    header: bool | None = None  # null: a header line unless column_names are given
    skip_rows: NonNegativeInt = 0  # lines to skip before the header (or the first row)
    delimiter: str | None = None  # null: from the format (comma, or tab for tsv)
    quote_char: str | None = '"'  # null: no quoting (fields may hold unbalanced quotes)
    multiline: bool = False  # true: a quoted field may span lines (else each physical line is one record)
    na_values: list[str] = []  # read as missing, like blank fields


class ColumnRules(Section):
    """Cleaning rules for one column; a row that breaks one is quarantined with the rule's reason."""

    required: bool = False  # missing:<column> (unless imputed)
    impute: Literal["mean", "median", "mode", "constant"] | None = None  # fitted on the training split
    fill_value: Any = None  # impute: constant
    range: dict[Literal["gt", "ge", "lt", "le"], float] = {}  # range:<column>
    allowed: list[Any] | None = None  # allowed:<column>
    regex: str | None = None  # regex:<column> (the whole value must match)

    @field_validator("regex")
    @classmethod
    def compiles(cls, value):
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid pattern: {exc}") from None
        return value


class FunctionSection(Section):
    """A labeling function: it reads one column and votes a label or abstains."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)  # `label: 1` is the label "1"
    name: str | None = None  # in the data report (default: <type>_<position>)
    column: str


class KeywordFunction(FunctionSection):
    type: Literal["keyword"]
    keywords: list[str]  # any of them, as a substring
    label: str
    case_sensitive: bool = False


class RegexFunction(FunctionSection):
    type: Literal["regex"]
    pattern: str  # searched anywhere in the value
    label: str
    case_sensitive: bool = True


class ThresholdFunction(FunctionSection):
    type: Literal["threshold"]
    op: Literal["gt", "ge", "lt", "le", "eq"]
    value: float
    label: str


class MapFunction(FunctionSection):
    type: Literal["map"]
    mapping: dict[str, str]  # value -> label; other values abstain

    @field_validator("mapping", mode="before")
    @classmethod
    def as_text(cls, value):
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value


LabelingFunction = typing.Annotated[KeywordFunction | RegexFunction | ThresholdFunction | MapFunction, Field(discriminator="type")]


class LabelingConfig(Section):
    """Rule-based labeling functions combined by majority vote (see pipeline/data/label.py)."""

    target: str = "label"  # the column the vote writes
    default: str | None = None  # the label when every function abstains (else: quarantined as unlabeled)
    functions: list[LabelingFunction] = []  # map, keyword, regex or threshold rules (pipeline/data/label.py)

    @property
    def names(self) -> list[str]:
        return [fn.name or f"{fn.type}_{i}" for i, fn in enumerate(self.functions)]

    @model_validator(mode="after")
    def unique_names(self):
        seen = set()
        for i, name in enumerate(self.names):
            if name in seen:
                raise problem(f"functions[{i}].name", f"duplicate labeling function name {name!r}")
            seen.add(name)
        return self


class SplitConfig(Section):
    method: Literal["random", "stratified", "grouped", "temporal", "leave_last_out"]
    ratios: list[NonNegativeFloat]  # train, val, test
    key: list[str]  # columns that identify a row (its place comes from their hash and the seed); []: every column
    stratify: str | None  # stratified: null is the label column (data.labeling.target)
    group: str | None  # grouped / leave_last_out: rows of one value stay in one split
    time: str | None  # temporal / leave_last_out: the column that orders rows

    @model_validator(mode="after")
    def consistent(self):
        if len(self.ratios) != 3 or abs(sum(self.ratios) - 1) > 1e-6:
            raise problem("ratios", f"give three non-negative numbers summing to 1, not {self.ratios}")
        needed = {"grouped": ["group"], "temporal": ["time"], "leave_last_out": ["group", "time"]}
        for name in needed.get(self.method, []):
            if not getattr(self, name):
                raise problem(name, f"split method {self.method!r} needs this column")
        return self


class DataConfig(Section):
    source: str  # "builtin" (the task's embedded data) or a path / glob / URI
    test_source: str | None  # rows used as the test split as they are ("builtin": the embedded test file)
    format: Literal["auto", "csv", "tsv", "parquet", "json", "text", "images", "numpy"]
    options: TableOptions  # a task's config class narrows this to its own reader options
    columns: dict[str, ColumnType] = Field(alias="schema")  # declared column -> type
    datetime_formats: dict[str, str] = {}  # datetime column -> strftime format or ISO8601 (else inferred per column)
    clean: dict[str, ColumnRules]
    dedup: list[str]  # key columns: later copies of a key are quarantined as duplicate
    stream_above_mb: NonNegativeFloat  # MiB on storage: a larger source streams through cleaning in flat memory, read again by each pass until the split holds its rows (0: always)
    labeling: LabelingConfig
    split: SplitConfig

    @model_validator(mode="after")
    def columns_are_declared(self):
        if self.split.method == "stratified" and self.split.stratify is None:
            self.split.stratify = self.labeling.target
        if not self.columns:
            return self
        known = set(self.columns) | ({self.labeling.target} if self.labeling.functions else set())
        listed = ", ".join(self.columns)
        for column, rules in self.clean.items():
            if column not in known:
                raise problem(f"clean.{column}", f"column {column!r} is not in data.schema ({listed})")
            if rules.impute in ("mean", "median") and self.columns.get(column) not in NUMERIC_TYPES:
                raise problem(f"clean.{column}.impute", f"impute: {rules.impute} needs a numeric column")
        for column in self.dedup:
            if column not in known:
                raise problem("dedup", f"column {column!r} is not in data.schema ({listed})")
        for column in self.datetime_formats:
            if self.columns.get(column) != "datetime":
                raise problem(f"datetime_formats.{column}", f"column {column!r} is not declared datetime in data.schema")
        for i, fn in enumerate(self.labeling.functions):
            if fn.column not in self.columns:
                raise problem(f"labeling.functions[{i}].column", f"column {fn.column!r} is not in data.schema ({listed})")
        return self


# --- training ---------------------------------------------------------------------------------------

class ScheduleConfig(Section):
    name: Literal[SCHEDULES]  # type: ignore[valid-type]
    step_size: PositiveInt  # step: epochs between decays
    gamma: PositiveFloat  # step: decay factor
    decay_start: NonNegativeInt  # exp_decay: constant lr before this epoch
    decay_rate: float  # exp_decay: lr * exp(rate * (start - epoch)) afterwards
    warmup_epochs: NonNegativeFloat  # warmup_cosine / one_cycle warm-up length
    min_lr_ratio: NonNegativeFloat  # cosine floor as a fraction of lr


class EarlyStoppingConfig(Section):
    patience: NonNegativeInt  # epochs without improvement before stopping; 0 disables
    min_delta: NonNegativeFloat  # smaller changes of train.metric do not count as improvement


class TrainConfig(Section):
    epochs: PositiveInt  # maximum; early stopping may end sooner
    batch_size: PositiveInt  # rows per step on each worker
    optimizer: Literal["adam", "adamw", "sgd"]
    lr: PositiveFloat  # base learning rate, before the schedule
    momentum: NonNegativeFloat  # sgd only
    weight_decay: NonNegativeFloat  # decoupled for adamw, L2 for adam and sgd
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)  # classifiers: share of the target spread over all classes; 0: off
    schedule: ScheduleConfig
    early_stopping: EarlyStoppingConfig
    metric: str  # selects the best checkpoint and drives early stopping
    mode: Literal["min", "max"]
    amp: bool
    amp_dtype: Literal["auto", "bf16", "fp16"] = "auto"  # auto: bf16 where supported, else fp16 with loss scaling
    compile: bool = False  # torch.compile the model (pays a compile on the first epoch)
    num_workers: PositiveInt
    data_parallel: bool = True  # false: one worker trains it alone, standing in for every rank (the same model), other such candidates on the others
    use_gpu: bool  # one GPU per worker
    cpus_per_worker: PositiveInt  # CPUs each training worker reserves
    max_failures: NonNegativeInt  # restarts from the latest checkpoint after a worker dies
    checkpoints_to_keep: PositiveInt
    cache_data: bool  # keep each worker's shard in memory after the first epoch (small data)
    shuffle_buffer: NonNegativeInt  # local shuffle buffer when streaming (cache_data: false)


# --- tuning -----------------------------------------------------------------------------------------

class Domain(Section):
    """One search dimension: exactly one of loguniform, uniform or choice."""

    loguniform: tuple[PositiveFloat, PositiveFloat] | None = None  # [low, high], sampled on a log scale
    uniform: tuple[float, float] | None = None  # [low, high]
    choice: list[Any] | None = None  # values sampled at random

    @model_validator(mode="after")
    def exactly_one(self):
        given = [k for k in ("loguniform", "uniform", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("use exactly one of {loguniform: [a, b]}, {uniform: [a, b]} or {choice: [...]}")
        return self


class AshaConfig(Section):
    grace_period: PositiveInt  # epochs every trial runs before ASHA may stop it
    reduction_factor: float = Field(gt=1)  # each rung keeps 1 / reduction_factor of the trials


class PBTConfig(Section):
    perturbation_interval: PositiveInt  # epochs between exploit / explore steps
    lr_bounds: tuple[PositiveFloat, PositiveFloat]  # resampled learning rates stay within
    quantile_fraction: float = Field(gt=0, le=0.5)  # the bottom share copies the top share
    resample_probability: float = Field(ge=0, le=1)  # a perturbed lr is resampled instead of scaled
    synch: bool  # perturb all trials together at each interval


DOTTED_KEYS = {"dotted_keys": True}  # a mapping keyed by dotted config keys: `--set tune.space.train.lr=...`


class TuneConfig(Section):
    space: dict[str, Domain] = Field(json_schema_extra=DOTTED_KEYS)  # config key -> domain (--search random / bayes)
    grid: dict[str, list[Any]] = Field(json_schema_extra=DOTTED_KEYS)  # config key -> values (--search grid)
    asha: AshaConfig
    pbt: PBTConfig


# --- candidates and the whole config ----------------------------------------------------------------

class CandidateConfig(Section):
    """One model candidate: changes to the `model`, `train` and `data` sections, for it alone."""

    model: dict[str, Any] = {}  # changes to the model section
    train: dict[str, Any] = {}  # changes to the train section
    data: dict[str, Any] = {}  # changes to the data section (e.g. its split)


class CandidatesConfig(Section):
    select: str  # best_val (the task's validation metric) or a candidate's name
    models: dict[str, CandidateConfig]  # empty: one model, the `model` section as it is


class PipelineConfig(Section):
    task: str
    seed: int  # splits, initialisation, shuffling, sampled negatives
    data: DataConfig
    features: Section
    model: Section
    train: TrainConfig
    tune: TuneConfig
    candidates: CandidatesConfig

    @model_validator(mode="after")
    def keys_exist(self):
        for section in ("space", "grid"):
            for key in getattr(self.tune, section):
                hint = key_hint(self, key)
                if hint is not None:
                    raise problem(f"tune.{section}.{key}", f"not a config key{hint}")
        select, names = self.candidates.select, self.candidates.models
        if select != "best_val" and select not in names:
            raise problem("candidates.select", f"{select!r} is neither best_val nor a candidate ({', '.join(names) or 'none'})")
        self.candidate_configs()  # each candidate's merged config must be valid too
        return self

    def candidate_configs(self) -> list[tuple[str, "PipelineConfig"]]:
        """(name, config) per model candidate; a single ("model", self) without candidates."""
        if not self.candidates.models:
            return [("model", self)]
        base = self.to_dict()
        out = []
        for name, change in self.candidates.models.items():
            raw = copy.deepcopy(base)
            for section in ("model", "train", "data"):
                raw[section] = deep_merge(raw[section], getattr(change, section), (section,))
            raw["candidates"] = {"select": "best_val", "models": {}}
            try:
                out.append((name, type(self).model_validate(raw)))
            except ValidationError as exc:
                raise problem(f"candidates.models.{name}", str(config_error(exc, type(self)))) from None
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain values, round-trippable; rule and option keys left at their neutral default are omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --- merging, overrides and error messages ----------------------------------------------------------

# Sections that describe one table: a user file that gives one replaces the default instead of merging
# with it (Adult's columns must not leak into someone else's schema), and a list of candidates is
# the user's whole list.
REPLACED_WHOLE = {("data", "schema"), ("data", "options"), ("data", "clean"), ("data", "labeling"), ("candidates", "models")}


def deep_merge(base: dict, update: dict, path: tuple = ()) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and path + (key,) not in REPLACED_WHOLE:
            out[key] = deep_merge(out[key], value, path + (key,))
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(raw: dict, dotted: str, value: Any, cls: type[BaseModel]) -> None:
    """`--set a.b=value`: replaces the value, except that a mapping given for a typed section
    (e.g. `tune.pbt={synch: true}`) changes only the keys it names, as a config file would."""
    parts = path_parts(cls, dotted)
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
    current = node.get(parts[-1])
    is_section = isinstance(annotation_at(cls, parts), type) and issubclass(annotation_at(cls, parts), BaseModel)
    if isinstance(value, dict) and isinstance(current, dict) and is_section:
        node[parts[-1]] = deep_merge(current, value, tuple(parts))
    else:
        node[parts[-1]] = value


def path_parts(cls: type[BaseModel], dotted: str) -> list[str]:
    """`a.b.c` -> its keys; inside a mapping keyed by dotted config keys the rest is one key
    (`tune.space.train.lr` -> tune, space, train.lr)."""
    parts = dotted.split(".")
    node: Any = cls
    for i, part in enumerate(parts[:-1]):
        node = unwrap_optional(node)
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            break
        fields = {f.alias or n: f for n, f in node.model_fields.items()}
        if part not in fields:
            break
        if (fields[part].json_schema_extra or {}).get("dotted_keys"):
            return parts[: i + 1] + [".".join(parts[i + 1:])]
        node = fields[part].annotation
    return parts


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=0.01` -> ("train.lr", 0.01); the value is parsed as YAML (numbers, lists, mappings)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc.problem})") from None


def validate(cls: type[PipelineConfig], raw: dict) -> PipelineConfig:
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, cls) from None


def config_error(exc: ValidationError, cls: type[BaseModel] | None = None) -> ConfigError:
    """One line naming every problem by its dotted key."""
    problems: list[str] = []
    for err in exc.errors():
        loc = list(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "config":
            loc += err["ctx"]["key"].split(".")
        elif err["type"] == "extra_forbidden":
            message = "unknown key" + known_keys(cls, loc)
        elif err["type"] == "missing":
            message = "a value is required"
        line = f"{dotted(loc)}: {message[:1].lower()}{message[1:]}" if loc else message
        if line not in problems:
            problems.append(line)
    return ConfigError("; ".join(problems))


def dotted(loc: list) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def known_keys(cls: type[BaseModel] | None, loc: list) -> str:
    parent = annotation_at(cls, [str(p) for p in loc[:-1]]) if cls else None
    if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
        return ""
    names = [f.alias or n for n, f in parent.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return (f" (did you mean {close[0]}?)" if close else "") + f"; known: {', '.join(names)}"


def annotation_at(cls: Any, parts: list[str]) -> Any:
    """The type a dotted path leads to in a config class (None where the path leaves the types)."""
    node = cls
    for part in parts:
        node = unwrap_optional(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            fields = {f.alias or n: f for n, f in node.model_fields.items()} | node.model_fields
            if part not in fields:
                return None
            node = fields[part].annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        elif typing.get_origin(node) is list and part.isdigit():
            node = typing.get_args(node)[0]
        else:
            return None
    return unwrap_optional(node)


def unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def key_hint(cfg: BaseModel, key: str) -> str | None:
    """None when the dotted `key` names a value in `cfg`, else a hint for the message."""
    node: Any = cfg
    done: list[str] = []
    for part in key.split("."):
        if isinstance(node, BaseModel):
            names = {f.alias or n: n for n, f in type(node).model_fields.items()}
            if part not in names:
                close = difflib.get_close_matches(part, list(names), n=1)
                return f" (did you mean {'.'.join(done + close)}?)" if close else ""
            node = getattr(node, names[part])
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return ""
        done.append(part)
    return None
