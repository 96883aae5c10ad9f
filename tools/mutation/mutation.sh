#!/usr/bin/env bash
# Mutation testing (issue 14) with mutmut 3, one module group after another, in a throwaway git worktree so
# that mutmut's setup.cfg and mutants/ never touch this checkout. Slow (about 1 mutant/s on 2 cores); not CI.
#   pip install --target /tmp/m3pkgs mutmut==3.8.1
#   rm -rf /tmp/m3pkgs/{_pytest,pytest,pytest-*,pluggy,pluggy-*,iniconfig,iniconfig-*,packaging,packaging-*,py.py}
#   MUT_CHILDREN=2 [MUT_SAMPLE=150 [MUT_SEED=14]] bash tools/mutation/mutation.sh quant distill curves aggregate tc pack train metrics
# Results: tools/mutation/results/mutation-<group>.{log,results} (survivors: `mutmut show <name>` in /tmp/xtc-mutation-<group>);
# then tools/mutation/mutation_recheck.py <group> after new tests, and tools/mutation/mutation_score.py for the scores.
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
out="$repo/tools/mutation/results"
PY="$repo/.venv/bin/python"
export PYTHONPATH=${MUTMUT_PKGS:-/tmp/m3pkgs} OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
export XTC_GLUE_DIR=${XTC_GLUE_DIR:-$(cd "$repo/.." && pwd)/shared/glue}
M="$PY $PYTHONPATH/bin/mutmut"
run_group() {  # name, modules to mutate, test files
    local name=$1 mut=$2 tests=$3
    # one worktree per group, kept afterwards, so that `mutmut show <name>` there still works
    name=$name${MUT_TAG:-}  # MUT_TAG=2: a second run of the group beside the first (its own worktree and results)
    local wt=${MUT_WORKTREE:-/tmp/xtc-mutation}-$name
    [ -d "$wt" ] || git -C "$repo" worktree add -f --detach "$wt" HEAD
    git -C "$wt" checkout -q --detach "$(git -C "$repo" rev-parse HEAD)"
    cd "$wt"
    { echo "[mutmut]"; echo "source_paths=xtc/"; echo "only_mutate="; for p in $mut; do echo "    $p"; done
      echo "pytest_add_cli_args_test_selection="; for t in $tests; do echo "    $t"; done
      echo "pytest_add_cli_args="; echo "    -p"; echo "    no:cacheprovider"; echo "    --import-mode=importlib"
      echo "also_copy="; echo "    tests/"; echo "    workflow/"; echo "    Snakefile"; } > setup.cfg
    rm -rf mutants
    local names=()
    if [ -n "${MUT_SAMPLE:-}" ]; then
        # a seeded random sample of MUT_SAMPLE mutants, for modules whose tests make a full run take hours:
        # generate every mutant (running none), list them, pick the sample
        $M run --max-children 1 "xtc.no_such_module.*" > /dev/null 2>&1
        mapfile -t names < <($M results --all true 2>/dev/null | awk -F: '/: /{gsub(/ /, "", $1); print $1}' |
                             sort | shuf -n "$MUT_SAMPLE" --random-source=<(yes "${MUT_SEED:-14}"))
        echo "sample of ${#names[@]} mutants" > "$out/mutation-$name.sample"
        printf '%s\n' "${names[@]}" >> "$out/mutation-$name.sample"
    fi
    timeout "${TIMEOUT:-14400}" nice -n 19 $M run --max-children "${MUT_CHILDREN:-1}" "${names[@]}" \
        > "$out/mutation-$name.log" 2>&1
    $M results --all true > "$out/mutation-$name.results" 2>&1
    grep -c ": killed" "$out/mutation-$name.results" | sed "s/^/$name: killed /"
}
for g in "$@"; do
    case $g in
        metrics) run_group metrics "xtc/metrics.py" "tests/test_metrics.py" ;;
        quant) run_group quant "xtc/quant.py" "tests/test_quant.py tests/test_infer.py tests/test_pack.py tests/test_precision.py" ;;
        distill) run_group distill "xtc/distill.py" "tests/test_distill.py tests/test_teacher_cache.py" ;;
        curves) run_group curves "xtc/study/curves.py xtc/study/claims.py" "tests/study/test_curves.py tests/study/test_claims.py" ;;
        aggregate) run_group aggregate "xtc/study/aggregate.py" "tests/study/" ;;
        tc) run_group tc "xtc/teacher_cache.py" "tests/test_teacher_cache.py" ;;
        pack) run_group pack "xtc/pack.py" "tests/test_pack.py tests/test_infer.py" ;;
        train) run_group train "xtc/train.py" "tests/test_train.py tests/test_compress.py tests/test_finetune.py tests/test_precision.py" ;;
        *) echo "unknown group $g (metrics quant distill curves aggregate tc pack train)" >&2; exit 2 ;;
    esac
done
