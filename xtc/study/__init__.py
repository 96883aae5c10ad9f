"""The XTC study as data: the run grid, aggregation, paper-style tables, the claims check and figures.

The Snakemake workflow (`Snakefile`, `workflow/rules/*.smk`) and the `xtc study ...` commands both use this
package, so a run's folder name, its settings and its place in the study are defined once. Its public names
are all re-exported here (`xtc.study.NAME`); the code lives in one module per concern:

paths      every path of the study: run ids (run_relpath, parse_run_relpath) and the files below the runs root
config     reading and validating a study config (ConfigError, load_config, validate_config, resolve_epochs);
           the control arms' levels (DA_LEVELS, KD_CONTROLS)
flags      the shell-quoted `xtc` command line of each job (teacher_flags, student_flags, augment_flags)
grid       the study grid: axes expanded into unique runs, each with its flags and inputs (members, study_runs)
aggregate  finished runs into runs.csv / summary.csv / missing.csv (collect, summarize, write_results)
Each module imports only the ones listed above it (tests/test_imports.py checks there is no cycle).
views      per-axis and teacher views of the results, shared by tables, claims and figures; each run's
           evaluation history as history.csv (collect_history, write_history, read_history)
diagnostics  each run's diagnostics at each evaluation as diagnostics.csv and a Markdown table
           (collect_diagnostics, write_diagnostics)
tables     paper-style Markdown tables, one per axis (mean ± 95% t half-width), and the reproduction table of a
           fresh study against a committed reference (reproduction_table, write_reproduction)
claims     the recipe's five findings as statistical tests: effect, 95% CI, decision rule, verdict (check_claims)
figures    byte-identical PNG/PDF figures (figure_names, make_figures), learning curves from history.csv, the
           flip-share figure from diagnostics.csv (fig_flip_share)
plan       rough cost estimate of a config (`xtc study plan`) and each task's training-set size (task_sizes)
versions   package versions and git commit behind the results
cli        the `xtc study ...` subcommands (register)
"""
from xtc.study.paths import (METRICS_FILE, SETTING_COLS, STATE_DIR, STUDENT_KEY_RE, STUDENT_RUN_RE, TEACHER_RUN_RE,
                             augment_file, augment_job, benchmark_file, config_key, export_file, export_job,
                             fmt_value, log_file, metrics_file, parse_run_relpath, parse_value, run_dir, run_key,
                             run_relpath, size_file, state_dir, student_key, student_run_id, teacher_dir, teacher_key,
                             teacher_run_id)
from xtc.study.config import (AUGMENTED_DA, DA_LEVELS, KD_CONTROLS, SCHEMA_PATH, ConfigError, check_config,
                              da_step_share, dump_config, kd_flags, load_config, norm_da, read_config, resolve_epochs,
                              resolve_glue_dir, schema_error_message, validate_config)
from xtc.study.flags import augment_flags, data_flags, join_flags, student_flags, teacher_flags
from xtc.study.grid import (FACTORS, axis_seeds, axis_tasks, members, run_inputs, setting_row, step1_row, study_runs,
                            teacher_row)
from xtc.study.aggregate import (MISSING_COLUMNS, RUNS_COLUMNS, SCORE_METRICS, STD_DDOF, SUMMARY_KEYS,
                                 IncompleteStudyError, collect, read_benchmark, read_json, read_results, summarize,
                                 task_score, write_results)
from xtc.study.views import (HISTORY_COLUMNS, METRIC_ABBREV, TASK_TITLES, axis_config, axis_view, collect_history,
                             isnan, point_averages, read_history, teacher_avg, teacher_view, write_history)
from xtc.study.diagnostics import (DIAGNOSTICS_COLUMNS, LINEAR_ROLES, collect_diagnostics, diagnostics_table,
                                   write_diagnostics)
from xtc.study.tables import (FACTOR_TITLES, REPRODUCTION_COLUMNS, axis_table, ci_half_width, point_label,
                              reproduction_markdown, reproduction_table, write_reproduction, write_tables)
from xtc.study.stats import CONFIDENCE, holm, is_collapsed, seeds_for_power, stratified_t
from xtc.study.claims import (CLAIMS, CLAIMS_COLUMNS, POOLED, ROLES, VERDICTS, check_claims, claim_budget, claim_da,
                              claim_depth, claim_kd, claim_size, finding_verdict)
from xtc.study.sizes import architecture_bytes, one_bit_ceiling, paper_size_share
from xtc.study.figures import (FIGURES, FLIP_SHARE_FIGURE, WBITS_STYLE, fig_budget, fig_depth, fig_flip_share, fig_kd,
                               fig_learning_curves, fig_lr, fig_size, figure_names, learning_curve_names,
                               make_figures)
from xtc.study.plan import GLUE_DEV_SIZE, GLUE_TOKENS, GLUE_TRAIN_SIZE, estimate_cost, examples_available, task_sizes
from xtc.study.versions import write_versions
from xtc.study.cli import (cmd_aggregate, cmd_all, cmd_check, cmd_claims, cmd_diagnostics, cmd_figures, cmd_plan,
                           cmd_reproduce, cmd_runs, cmd_tables, register)
