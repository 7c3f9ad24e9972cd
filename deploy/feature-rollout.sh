#!/usr/bin/env bash
# The seed's feature-rollout command line on top of `sovereign rollout` (the gateway runs and judges
# the stages; this only maps arguments). Exit status is the CLI's: 0 promoted to 100 %, 3 rolled
# back, 4 paused (too few requests), 1 an error; 2 a bad command line here.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/feature-rollout.sh FEATURE [--dry-run] [--force] [--rollback] [--verbose]
                                 [--steps 10,25,50,75,100] [--interval 5m]
       deploy/feature-rollout.sh --route MODEL --candidate DEPLOYMENT [same options]

  FEATURE                    roll out a feature flag: sovereign rollout start --flag FEATURE --wait
  --route M --candidate D    roll out deployment D of model M instead
  --rollback                 stop it and return to stable: sovereign rollout abort
  --dry-run                  print the plan and the current analysis; nothing moves
  --force                    do not ask for confirmation
  --verbose                  print every audit event
  --steps, --interval        candidate percents per stage and time per stage

environment: SOVEREIGN_URL (default http://127.0.0.1:8000), SOVEREIGN_ADMIN_KEY,
             SOVEREIGN_BIN (default: sovereign)
EOF
}
bad() { echo "feature-rollout.sh: $1" >&2; usage >&2; exit 2; }

feature="" route="" candidate="" rollback=0 opts=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run | --force | --verbose) opts+=("$1") ;;
    --rollback) rollback=1 ;;
    --steps | --interval | --route | --candidate)
      (($# >= 2)) && [[ $2 != -* ]] || bad "$1 needs a value"
      case $1 in
        --route) route=$2 ;;
        --candidate) candidate=$2 ;;
        *) opts+=("$1" "$2") ;;
      esac
      shift ;;
    -*) bad "unknown option $1" ;;
    *) [[ -z $feature ]] || bad "one FEATURE at a time"; feature=$1 ;;
  esac
  shift
done

if [[ -n $feature && -z $route && -z $candidate ]]; then
  target=(--flag "$feature")
elif [[ -z $feature && -n $route && ( -n $candidate || $rollback == 1 ) ]]; then
  target=(--route "$route")
else
  bad "name a FEATURE, or --route MODEL --candidate DEPLOYMENT"
fi
conn=(--url "${SOVEREIGN_URL:-http://127.0.0.1:8000}")
[[ -z ${SOVEREIGN_ADMIN_KEY:-} ]] || conn+=(--admin-key "$SOVEREIGN_ADMIN_KEY")

if ((rollback)); then
  for o in "${opts[@]}"; do [[ $o != --dry-run && $o != --steps && $o != --interval ]] || bad "--rollback takes no $o"; done
  exec "${SOVEREIGN_BIN:-sovereign}" rollout abort "${target[@]}" "${conn[@]}"
fi
[[ -z $candidate ]] || target+=(--candidate "$candidate")
exec "${SOVEREIGN_BIN:-sovereign}" rollout start "${target[@]}" --wait "${opts[@]}" "${conn[@]}"
