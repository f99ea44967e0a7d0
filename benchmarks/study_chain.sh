#!/usr/bin/env bash
# The long runs behind benchmarks/results/study-v2, study-v2-disjoint, widths/ and study-v2-joint, as one chain.
#
# Each run computes its rows from the one frozen commit its rows' config.json records (a resume under other code is
# refused), in a git worktree of that commit beside this checkout, with this checkout's virtual environment. Every
# step resumes: rows already stored (in the worktree, or committed here) are reused, so after an interruption (a
# session's end, a reboot) `study_chain.sh run` starts where the chain stopped. One job at a time, two processes of one
# thread each under torchrun (two cores). `study_chain.sh sync` copies the worktrees' finished rows back here, to be
# committed as they come.
#
#   benchmarks/study_chain.sh run  > chain.log 2>&1 &    # the chain, in the background
#   benchmarks/study_chain.sh sync                       # then git add benchmarks/results && git commit
#
# The plans: benchmarks/results/study-v2/PLAN.md, widths/PLAN.md and study-v2-joint/PLAN.md.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
runs="${ORTHOXFER_RUNS:-$here/../orthoxfer-runs}" # the worktrees
python="$here/.venv/bin/python"
STUDY=e132b1d # study-v2, its disjoint twin and the width ladder
JOINT=e0d050b # study-v2-joint: step and lambda chosen together

# folder under benchmarks/results -> the commit its rows come from
declare -A FROM=([study-v2]=$STUDY [study-v2-disjoint]=$STUDY [widths/w64]=$STUDY [widths/w192]=$STUDY [study-v2-joint]=$JOINT)

worktree() { # $1: commit -> the worktree's path, made (and given this checkout's committed rows) on first use
  local tree="$runs/$1" folder
  if [ ! -d "$tree" ]; then
    mkdir -p "$runs"
    git -C "$here" worktree add --detach "$tree" "$1" >&2
  fi
  for folder in "${!FROM[@]}"; do
    if [ "${FROM[$folder]}" = "$1" ] && [ -d "$here/benchmarks/results/$folder" ]; then
      mkdir -p "$tree/benchmarks/results/$folder"
      cp -a -n "$here/benchmarks/results/$folder/." "$tree/benchmarks/results/$folder/"
    fi
  done
  echo "$tree"
}

study() { # $1: commit, the rest: orthoxfer study's arguments
  local tree
  tree="$(worktree "$1")"
  shift
  echo "== $(date -u +%FT%TZ) study $*"
  (cd "$tree" && PYTHONPATH="$tree" OMP_NUM_THREADS=1 "$python" -m torch.distributed.run --standalone \
    --nproc_per_node 2 -m orthoxfer study --device cpu --resume "$@")
}

models() { # $1: a width whose models do not ship (past the package's 25 MB): its image towers, kept with its results
  # (widths/w<width>/models, committed: its pre-training takes hours and a cache dies with its machine), put where the
  # worktree's study reads shipped files; pre-trained there (in one process, resumable) when they are not kept yet
  local tree kept have which
  tree="$(worktree $STUDY)"
  kept="$here/benchmarks/results/widths/w$1/models"
  have="$tree/orthoxfer/models/mini_weights"
  if [ -d "$kept" ]; then cp -a -n "$kept/." "$have/"; fi
  for which in a b release; do
    if [ ! -f "$have/model_${which}_w$1.safetensors" ]; then
      echo "== $(date -u +%FT%TZ) pretrain width $1"
      (cd "$tree" && PYTHONPATH="$tree" "$python" -m orthoxfer mini pretrain --width "$1" --models a,b,release)
      mkdir -p "$kept"
      cp -a "$have"/model_*_w"$1".safetensors "$kept/"
      return
    fi
  done
}

widths() { # $1: a width -> its study, on the two rungs the ladder compares
  study $STUDY --config configs/study-v2.toml --rungs data,release --first-seed 1 --seeds 3 --paper-controls '' \
    --methods penalty,cayley,procrustes,transfusion,theseus --width "$1" --out "benchmarks/results/widths/w$1"
}

run() { # the evidence study (seeds, twin), width 64, step and lambda together, then width 192
  local n
  for n in 1 2 3 4 5; do # complete seeds across the four rungs land first
    study $STUDY --config configs/study-v2.toml --first-seed 1 --seeds $n --out benchmarks/results/study-v2
  done
  study $STUDY --config configs/study-v2.toml --disjoint-pools --rungs data,release --first-seed 1 --seeds 2 \
    --paper-controls '' --methods penalty,riemannian,cayley,procrustes,transfusion --out benchmarks/results/study-v2-disjoint
  widths 64 # the one open issue's first rung of the ladder, then the rest of step and lambda chosen together
  study $JOINT --config configs/study-v2-joint.toml --rungs seed,data --methods penalty,riemannian,cayley \
    --controls spectrum --paper-controls '' --tune-from '' --no-auto --first-seed 1 --seeds 5 \
    --out benchmarks/results/study-v2-joint
  models 192
  widths 192
  echo "== $(date -u +%FT%TZ) done"
}

sync() { # each rung's rows and config.json; not the folder's other files (its plan is written here, its summary made
  # here by this checkout's report code from the rows)
  local folder rung
  for folder in "${!FROM[@]}"; do
    for rung in "$runs/${FROM[$folder]}/benchmarks/results/$folder"/*/; do
      if [ -f "$rung/config.json" ]; then
        mkdir -p "$here/benchmarks/results/$folder/$(basename "$rung")"
        cp -a "$rung/." "$here/benchmarks/results/$folder/$(basename "$rung")/"
      fi
    done
  done
}

case "${1:-}" in
run) run ;;
sync) sync ;;
*)
  echo "usage: $0 run|sync (see the comment at its top)" >&2
  exit 2
  ;;
esac
