"""Study config: YAML files merged as Snakemake merges config files, validated against
workflow/schemas/config.schema.yaml (defaults filled) plus the rules a schema cannot express, and the
lookups the rest of the study makes in it (GLUE folder, budget name -> epochs).
"""
from __future__ import annotations

import copy
import os

from xtc.tasks import TASKS

KNOWN_AXES = ("budget", "lr", "kd", "da", "bits", "depth", "xtc")
KD_MODES = ("none", "two-stage", "one-stage")

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "workflow",
                           "schemas", "config.schema.yaml")


class ConfigError(ValueError):
    """A study config that cannot be used; the message names the key and the fix."""


def merge_configs(base: dict, update: dict) -> dict:
    """Snakemake's merge of config files: nested dicts are merged key by key, everything else replaced."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_configs(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(paths, overrides: dict | None = None, schema: str | None = None) -> dict:
    """Read one or more YAML config files (later ones merge over earlier ones, as with Snakemake's
    `configfile:` + `--configfile`), validate them and return the normalised config."""
    import yaml

    config: dict = {}
    for p in [paths] if isinstance(paths, str) else paths:
        with open(p) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: a study config is a YAML mapping, got {type(data).__name__}")
        config = merge_configs(config, data)
    if overrides:
        config = merge_configs(config, overrides)
    return validate_config(config, schema)


def _schema_error_message(err) -> str:
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


def validate_config(config: dict, schema: str | None = None) -> dict:
    """Check a config against workflow/schemas/config.schema.yaml (filling its defaults) and the rules a
    schema cannot express; return a normalised deep copy. Raises ConfigError with the offending key."""
    import yaml

    config = copy.deepcopy(config)
    schema = schema or SCHEMA_PATH
    if os.path.isfile(schema):
        import jsonschema

        with open(schema) as f:
            sch = yaml.safe_load(f)
        _fill_defaults(config, sch)
        validator = jsonschema.Draft202012Validator(sch)
        errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), str(e.path)))
        if errors:
            raise ConfigError(_schema_error_message(jsonschema.exceptions.best_match(errors)))
    return check_config(config)


def _fill_defaults(instance, schema) -> None:
    """Set schema defaults of missing properties, recursively (as snakemake.utils.validate does)."""
    if not isinstance(instance, dict) or not isinstance(schema, dict):
        return
    for name, sub in schema.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if name in instance:
            _fill_defaults(instance[name], sub)
    items = schema.get("items")
    if isinstance(items, dict):
        for x in instance if isinstance(instance, list) else []:
            _fill_defaults(x, items)


def _norm_da(v):
    if v is True or v == "on":
        return "on"
    if v is False or v == "off":
        return "off"
    raise ConfigError(f"config error: da must be 'off' or 'on', got {v!r}")


def check_config(config: dict) -> dict:
    """Semantic checks and normalisation (YAML's on/off booleans become 'on'/'off'). Returns the config."""
    if not isinstance(config, dict):
        raise ConfigError("config error: the study config must be a mapping")
    for key in ("teacher", "tasks", "seeds", "budgets", "anchor", "step1", "axes"):
        if key not in config:
            raise ConfigError(f"config error: missing required key {key!r}")
    L = config["teacher"].get("num_layers")
    if not isinstance(L, int) or L < 1:
        raise ConfigError(f"config error at teacher.num_layers: the teacher's depth must be a positive integer, "
                          f"got {L!r}")
    for t in config["tasks"]:
        if t not in TASKS:
            raise ConfigError(f"config error at tasks: unknown task {t!r}; choose from {', '.join(TASKS)}")
    budgets = config["budgets"]
    for i, o in enumerate(config.get("budget_overrides") or []):
        if o["budget"] not in budgets:
            raise ConfigError(f"config error at budget_overrides[{i}].budget: unknown budget {o['budget']!r}; "
                              f"defined budgets: {', '.join(budgets)}")

    def check_value(where, factor, v):
        if factor == "epochs":
            if isinstance(v, str) and v not in budgets:
                raise ConfigError(f"config error at {where}: unknown budget {v!r}; defined budgets: "
                                  f"{', '.join(budgets)} (or give a number of epochs)")
            if not isinstance(v, str) and not (isinstance(v, (int, float)) and v > 0):
                raise ConfigError(f"config error at {where}: epochs must be a budget name or a positive number")
        elif factor == "depth":
            d = L if v == "full" else v
            if not isinstance(d, int) or not 1 <= d <= L:
                raise ConfigError(f"config error at {where}: depth {v!r} is not in 1..{L} (the teacher has "
                                  f"{L} layers; 'full' means {L})")
        elif factor == "da":
            return _norm_da(v)
        return v

    for k, v in list(config["anchor"].items()):
        config["anchor"][k] = check_value(f"anchor.{k}", k, v)
    for k, v in list(config["step1"].items()):
        if k == "epochs":
            check_value(f"step1.{k}", k, v)
    names = [a["name"] for a in config["axes"]]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"config error at axes: axis names must be unique, repeated: {', '.join(sorted(dup))}")
    for i, axis in enumerate(config["axes"]):
        for part in ("vary", "set"):
            for factor, vals in (axis.get(part) or {}).items():
                vals_list = vals if part == "vary" else [vals]
                normed = [check_value(f"axes[{i}].{part}.{factor}", factor, v) for v in vals_list]
                axis.setdefault(part, {})[factor] = normed if part == "vary" else normed[0]
        if not axis.get("vary"):
            raise ConfigError(f"config error at axes[{i}] ({axis['name']}): an axis must vary at least one factor")
        extra = set(axis.get("tasks") or []) - set(config["tasks"])
        if extra:
            raise ConfigError(f"config error at axes[{i}].tasks: {', '.join(sorted(extra))} not in the config's "
                              f"tasks ({', '.join(config['tasks'])})")
    from xtc.study.grid import members  # not at the top: xtc.study.grid imports this module

    members(config)  # expansion errors (e.g. augmentation without KD) surface now, naming the axis
    return config


def dump_config(config: dict) -> str:
    """The validated config as YAML (what `xtc study ... --config` reads back)."""
    import yaml

    return ("# effective study config: validated, schema defaults filled (written by the workflow)\n"
            + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=110))


def resolve_glue_dir(config: dict, environ=os.environ) -> str | None:
    """config `glue_dir` (a folder, or 'hub' for the Hugging Face hub) wins, then $XTC_GLUE_DIR, then
    ../shared/glue. Returns an absolute folder, or None for the hub."""
    g = config.get("glue_dir") or environ.get("XTC_GLUE_DIR") or "../shared/glue"
    return None if g == "hub" else os.path.abspath(g)


def resolve_epochs(config: dict, task: str, value) -> float:
    """A budget name (per-task overrides applied) or a number of epochs -> epochs."""
    if isinstance(value, str):
        epochs = config["budgets"][value]
        for o in config.get("budget_overrides") or []:
            if o["budget"] == value and task in o["tasks"]:
                epochs = o["epochs"]
        return float(epochs)
    return float(value)
