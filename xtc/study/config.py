"""Study config: validated once against workflow/schemas/config.schema.yaml with Snakemake's own
`validate` (which fills the schema's defaults), plus `check_config`, the rules a schema cannot express;
and the lookups the rest of the study makes in it (GLUE folder, budget name -> epochs).

Inside the workflow, Snakemake reads the config files (`--configfile`, `--config`) and common.smk calls
`validate_config`; the `xtc study ...` commands read one file with `load_config`, which does the same.
"""
from __future__ import annotations

import functools
import os

# the checkout's schema (the workflow and the study commands run from a checkout of xtc-bench)
SCHEMA_PATH = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                                            "workflow", "schemas", "config.schema.yaml"))


class ConfigError(ValueError):
    """A study config that cannot be used; the message names the key and the fix."""


def read_config(path: str) -> dict:
    """One YAML study config as a dict; a syntax error names the file, line and column."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read study config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else path
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        ctx, ctx_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if ctx and ctx_mark:  # e.g. the unclosed [ that the problem belongs to
            what += f" ({ctx} at line {ctx_mark.line + 1}, column {ctx_mark.column + 1})"
        raise ConfigError(f"{where}: YAML syntax error: {what}; fix the YAML there") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a study config is a YAML mapping of keys, got {type(data).__name__}")
    return data


def load_config(path: str, overrides: dict | None = None) -> dict:
    """Read a complete study config (a profile, or the study-config.yaml the workflow writes), apply
    `overrides` as Snakemake applies `--config` (snakemake.utils.update_config), and validate it."""
    from snakemake.utils import update_config

    config = read_config(path)
    if overrides:
        update_config(config, overrides)
    return validate_config(config)


def schema_error_message(err) -> str:
    """One line naming the config key of a jsonschema error (e.g. 'config error at axes[2].vary.kd[0]: ...')."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
    msg = f"config error at {where or '<top level>'}: {err.message}"
    inst = err.instance
    if isinstance(inst, str):
        try:
            float(inst)
            msg += (f" (YAML reads {inst!r} as text: write exponent numbers with a decimal point, "
                    f"e.g. 5.0e-5, and unquoted)")
        except ValueError:
            pass
    return msg


def validate_config(config: dict, schema: str = SCHEMA_PATH) -> dict:
    """Validate `config` in place with snakemake.utils.validate (schema defaults filled), then check_config.
    Returns the config. Raises ConfigError naming the offending key."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    if not os.path.isfile(schema):
        raise ConfigError(f"the study config schema {schema} is missing; the study runs from a checkout of "
                          f"xtc-bench (git checkout -- workflow/schemas)")
    if not isinstance(config, dict):
        raise ConfigError("config error: a study config is a mapping of keys")
    try:
        validate(config, schema)
    except WorkflowError as exc:
        err = exc.__context__  # the jsonschema error Snakemake caught (its message keeps only the text)
        err = err if isinstance(err, jsonschema.exceptions.ValidationError) else None
        raise ConfigError(schema_error_message(err) if err else f"config error: {exc}") from None
    return check_config(config)


# Control arms (issue 23): study levels of the `da` and `kd` factors beyond xtc's own settings.
# da: "on" trains on the augmented file for the same epochs as "off" ((1 + copies)x the optimizer steps: the
# paper's comparison); "on-steps" trains on it for epochs / (1 + copies), the optimizer steps (and warm-up
# steps) of "off": the control that tells the data from the extra steps.
DA_LEVELS = ("off", "on", "on-steps")
AUGMENTED_DA = ("on", "on-steps")  # the levels that train on the augmented file
# kd: a study level -> (xtc --kd, --stage1-lr-factor); "two-stage" keeps xtc's published factor (2.5),
# "two-stage-1x" runs stage 1 at the base rate: the rate-matched control of two-stage KD
KD_CONTROLS = {"two-stage-1x": ("two-stage", 1.0)}


def norm_da(v) -> str:
    """A data-augmentation value as 'off'/'on'/'on-steps' (YAML reads unquoted on/off as booleans)."""
    if v is True or v == "on":
        return "on"
    if v is False or v == "off":
        return "off"
    if v == "on-steps":
        return v
    raise ConfigError(f"config error: da must be one of {', '.join(DA_LEVELS)}, got {v!r}")


def kd_flags(level: str) -> tuple[str, float | None]:
    """A study kd level as xtc's (--kd, --stage1-lr-factor); None: xtc's default factor."""
    return KD_CONTROLS.get(level, (level, None))


def da_step_share(config: dict, da: str) -> float:
    """The share of a budget's epochs a da level trains for: 1 / (1 + copies) for "on-steps" (its optimizer
    and warm-up steps are those of "off"), else 1."""
    return 1.0 / (1 + int(config["augment"]["copies"])) if da == "on-steps" else 1.0


def check_config(config: dict) -> dict:
    """The rules a schema cannot express, on a schema-valid config: budget names exist, depths fit the
    teacher, axis tasks and seeds are the config's, axis names are unique, augmentation comes with KD. YAML's
    on/off booleans become 'on'/'off'. Returns the config (normalised in place)."""
    config["allow_incomplete"] = config["allow_incomplete"] in (True, "true")  # --config passes text
    check_tasks(config)
    L = config["teacher"]["num_layers"]
    budgets = config["budgets"]
    for i, o in enumerate(config["budget_overrides"]):
        if o["budget"] not in budgets:
            raise ConfigError(f"config error at budget_overrides[{i}].budget: unknown budget {o['budget']!r}; "
                              f"defined budgets: {', '.join(budgets)}")

    def check_value(where, factor, v):
        if factor == "epochs" and isinstance(v, str) and v not in budgets:
            raise ConfigError(f"config error at {where}: unknown budget {v!r}; defined budgets: "
                              f"{', '.join(budgets)} (or give a number of epochs)")
        if factor == "depth" and not 1 <= (L if v == "full" else v) <= L:
            raise ConfigError(f"config error at {where}: depth {v!r} is not in 1..{L} (the teacher has "
                              f"{L} layers; 'full' means {L})")
        return norm_da(v) if factor == "da" else v

    for k, v in list(config["anchor"].items()):
        config["anchor"][k] = check_value(f"anchor.{k}", k, v)
    check_value("step1.epochs", "epochs", config["step1"]["epochs"])
    names = [a["name"] for a in config["axes"]]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"config error at axes: axis names must be unique, repeated: {', '.join(sorted(dup))}")
    for i, axis in enumerate(config["axes"]):
        where = f"axes[{i}] ({axis['name']})"
        axis["vary"] = {f: [check_value(f"axes[{i}].vary.{f}", f, v) for v in vals] for f, vals in axis["vary"].items()}
        if "set" in axis:
            axis["set"] = {f: check_value(f"axes[{i}].set.{f}", f, v) for f, v in axis["set"].items()}
        extra_seeds = set(axis.get("seeds") or []) - set(config["seeds"])
        if extra_seeds:
            raise ConfigError(f"config error at axes[{i}].seeds: {', '.join(map(str, sorted(extra_seeds)))} not in "
                              f"the config's seeds ({', '.join(map(str, config['seeds']))})")
        extra = set(axis.get("tasks") or []) - set(config["tasks"])
        if extra:
            raise ConfigError(f"config error at axes[{i}].tasks: {', '.join(sorted(extra))} not in the config's "
                              f"tasks ({', '.join(config['tasks'])})")
        # augmentation needs KD (the teacher labels the augmented inputs); fp32 points are the teacher or a
        # step-1 run, which never augment
        point = {**config["anchor"], **axis.get("set", {})}
        for kd in axis["vary"].get("kd", [point["kd"]]):
            for da in axis["vary"].get("da", [point["da"]]):
                quantized = any(w < 32 for w in axis["vary"].get("wbits", [point["wbits"]]))
                if da in AUGMENTED_DA and kd == "none" and quantized:
                    raise ConfigError(f"config error at {where}: data augmentation (da: {da}) needs KD (the teacher "
                                      f"labels the augmented inputs); kd 'none' cannot use it")
        # a DA run trains on the augmented file (augment.max_train_samples originals plus copies), whatever its
        # examples; a setting it would silently ignore is an error
        if set(AUGMENTED_DA) & set(axis["vary"].get("da", [point["da"]])) and (
                axis["vary"].get("examples") or point.get("examples") is not None):
            raise ConfigError(f"config error at {where}: da 'on' and 'on-steps' train on the augmented file (augment."
                              f"max_train_samples originals x (1 + copies)), so examples cannot be set with it; "
                              f"set augment.max_train_samples instead, or vary examples on another axis")
    return config


def check_tasks(config: dict) -> None:
    """Every task is a GLUE task or one of task_specs, whose spec files load and carry their own name."""
    from xtc.tasks import TASKS, load_task_spec

    specs = config.get("task_specs") or {}
    for name, path in specs.items():
        if name in TASKS:
            raise ConfigError(f"config error at task_specs.{name}: {name} is a GLUE task; name your task otherwise")
        try:
            task = load_task_spec(path)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"config error at task_specs.{name}: {exc}") from None
        if task.name != name:
            raise ConfigError(f"config error at task_specs.{name}: the spec {path} names its task {task.name!r}; "
                              f"use the same name in both")
    lists = [("tasks", config["tasks"])] + [(f"axes[{i}].tasks", a.get("tasks") or []) for i, a in
                                             enumerate(config["axes"])]
    lists += [(f"budget_overrides[{i}].tasks", o["tasks"]) for i, o in enumerate(config["budget_overrides"])]
    lists += [("claims.small_tasks", (config.get("claims") or {}).get("small_tasks") or [])]
    for where, names in lists:
        for i, t in enumerate(names):
            if t not in TASKS and t not in specs:
                raise ConfigError(f"config error at {where}[{i}]: {t!r} is neither a GLUE task ({', '.join(TASKS)}) "
                                  f"nor defined in task_specs (name -> spec file)")


def task_of(config: dict, name: str):
    """The xtc.tasks.Task of a study task: a GLUE task or one of the config's task_specs."""
    from xtc.tasks import TASKS

    return TASKS[name] if name in TASKS else _load_spec(config["task_specs"][name])


@functools.lru_cache(maxsize=64)
def _load_spec(path: str):
    """A task spec read once per process (the aggregation looks tasks up for every run)."""
    from xtc.tasks import load_task_spec

    return load_task_spec(path)


def task_arg(config: dict, name: str) -> str:
    """What `xtc --task` takes for a study task: the GLUE name, or the task's spec file."""
    return (config.get("task_specs") or {}).get(name, name)


def dump_config(config: dict) -> str:
    """The validated config as YAML (what `xtc study ... --config` reads back)."""
    import yaml

    study = {k: v for k, v in config.items() if k != "allow_incomplete"}  # how to aggregate, not the study
    return ("# effective study config: validated, schema defaults filled (written by the workflow)\n"
            + yaml.safe_dump(study, sort_keys=False, default_flow_style=None, width=110))


def resolve_glue_dir(config: dict, environ=os.environ) -> str | None:
    """config `glue_dir` (a folder, or 'hub' for the Hugging Face hub) wins, then $XTC_GLUE_DIR, then
    ../shared/glue. Returns the folder's canonical absolute path (symlinks and spellings resolved, so that
    one folder always gives the same flags), or None for the hub."""
    g = config.get("glue_dir") or environ.get("XTC_GLUE_DIR") or "../shared/glue"
    return None if g == "hub" else os.path.realpath(g)


def resolve_epochs(config: dict, task: str, value) -> float:
    """A budget name (per-task overrides applied) or a number of epochs -> epochs."""
    if isinstance(value, str):
        epochs = config["budgets"][value]
        for o in config.get("budget_overrides") or []:
            if o["budget"] == value and task in o["tasks"]:
                epochs = o["epochs"]
        return float(epochs)
    return float(value)
