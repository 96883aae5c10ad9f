"""xtc-bench: extreme compression (XTC) of BERT-family models, as a reproducible benchmark.

How data flows through the core package (the `xtc` command; the study in `xtc.study` drives the same commands):

  cli          parses a command; its flags are generated from the settings in config (settings turns each
               `setting()` field into a flag with its help, default and range check)
  tasks, data  a task (GLUE or your own spec) -> its splits read from TSV/CSV/JSONL/Parquet -> tokenized
               `Encoded` examples and length-grouped batches; metrics scores predictions
  models, arch a teacher or student loaded from a folder, a hub id or a packed file; arch finds each
               architecture's quantized roles, layers and attention scores
  compress     builds the student: layer reduction (distill.layer_maps) and fake-quant wrappers (quant), the KD
               stages and their losses (distill), the teacher's outputs once per run (teacher_cache)
  finetune     the teacher: the same loop with the labels only
  train        the one training loop: steps (precision, compile_step), evaluation, best checkpoint, exact resume;
               it hands each checkpoint to run_folder and never looks at the folder itself
  run_folder   a run folder's lifecycle: one writer, refuse or resume, checkpoints, metrics.json, the final save;
               checkpoint serialises the resume state (safetensors + JSON, no pickle); files owns file names,
               atomic writes, stale temporaries, output-path checks and locks
  pack         export: a quantized student -> a bit-packed, checksummed `.xtc` file, and back (load_packed)
  infer        the integer inference path from a `.xtc` (int8 codes, int8 activations, int32 accumulation);
               models.load_for_inference picks it for `xtc evaluate` and `xtc predict`
  augment      TinyBERT-style augmented training inputs for `compress --train-file`
  diagnostics  per-evaluation records of why a student stalls (code flips, train-vs-dev gap, KD gradient shares)
"""
__version__ = "0.1.0"
