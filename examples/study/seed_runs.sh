# Sourced by examples/study/run.sh and examples/study-gpu/run.sh: one seed's runs, one per method.
#
#   run_seed SEED
#
# Runs `$CREAM run $CONFIG --method M --seed SEED --out $RUNS/seed-SEED/M` for each M of `methods`, in order, each
# with --reuse-from every earlier run of this seed and the first method's run of the first seed (the stages they share:
# prompts, SFT, M0's and M1's evaluations, iteration-1 samples); with PLAN (--plan) set, only the runs that exist
# already are named. Sets seed_runs to this seed's run folders and appends them to all_runs.
run_seed() {
    local seed="$1" method out dir
    local earlier=()  # run directories whose finished stages this seed's runs may take
    if [[ "$seed" != "${seeds[0]}" ]]; then
        earlier+=("$RUNS/seed-${seeds[0]}/${methods[0]}")
    fi
    seed_runs=()
    for method in "${methods[@]}"; do
        out="$RUNS/seed-$seed/$method"
        local reuse=()
        for dir in ${earlier[@]+"${earlier[@]}"}; do  # a plan names only the runs that exist already
            if (( ${#PLAN[@]} == 0 )) || [[ -f "$dir/manifest.json" ]]; then
                reuse+=(--reuse-from "$dir")
            fi
        done
        echo "run.sh: seed $seed, method $method -> $out" >&2
        "$CREAM" run "$CONFIG" --method "$method" --seed "$seed" --out "$out" ${reuse[@]+"${reuse[@]}"} \
            ${PLAN[@]+"${PLAN[@]}"}
        earlier+=("$out")
        seed_runs+=("$out")
        all_runs+=("$out")
    done
}
