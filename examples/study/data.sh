# Sourced by examples/study/run.sh and examples/study-gpu/run.sh: the check both make of their data folder.
#
#   check_data_folder DATA README FILE...
#
# Stops the script (exit 2) with one line on stderr when DATA is not a folder or lacks one of FILE... (paths relative
# to DATA); README is the page that lists the files and their sources.
check_data_folder() {
    local data="$1" readme="$2"
    shift 2
    if [[ ! -d "$data" ]]; then
        echo "run.sh: data folder not found: $data (expected a folder laid out like ../shared/data with" \
             "$*; set STUDY_DATA=DIR, see $readme)" >&2
        exit 2
    fi
    local missing=() f
    for f in "$@"; do
        [[ -f "$data/$f" ]] || missing+=("$f")
    done
    if (( ${#missing[@]} )); then
        echo "run.sh: data folder $data lacks ${missing[*]} (expected the files listed in $readme;" \
             "set STUDY_DATA=DIR)" >&2
        exit 2
    fi
}
