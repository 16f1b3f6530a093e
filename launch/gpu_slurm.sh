#!/usr/bin/env bash
# Pretrain or fine-tune bert_jax on a SLURM GPU cluster: one process per GPU.
#
#   launch/gpu_slurm.sh [FLAGS] [-- ARGS FOR bert_jax.main]
#
# Writes an sbatch script and submits it with `sbatch`. The job runs
#   srun --nodes=N --ntasks-per-node=G ... python -m bert_jax.main ...
# N*G processes, each with one GPU. jax.distributed settings: JAX_COORDINATOR_ADDRESS is the
# job's first node and --port; JAX_NUM_PROCESSES=N*G; in each task JAX_PROCESS_ID=$SLURM_PROCID
# and JAX_LOCAL_DEVICE_IDS=$SLURM_LOCALID (the GPU it drives; every task sees all of its
# node's GPUs, so NCCL can use NVLink between them). bert_jax.main then calls
# jax.distributed.initialize() with them; jax reads JAX_LOCAL_DEVICE_IDS itself, and SLURM's own
# SLURM_NTASKS / SLURM_PROCID agree with JAX_NUM_PROCESSES / JAX_PROCESS_ID.
# The checkout (and --venv) must be on a filesystem every node sees.
# --dry-run prints the sbatch script and the sbatch command and submits nothing.
set -euo pipefail
# shellcheck source=launch/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
usage: launch/gpu_slurm.sh [FLAGS] [-- MAIN_ARGS...]

Allocation
  --nodes N               nodes                                 [default 1]
  --gpus-per-node G       GPUs per node = processes per node    [default 8]
  --cpus-per-task C       CPUs per process                      [default: SLURM's]
  --partition P, --account A, --qos Q, --time T (e.g. 2-00:00:00), --job-name NAME [default bert-jax]
  --sbatch-arg ARG        any other #SBATCH line, e.g. --sbatch-arg=--exclusive (repeatable)
Environment
  --venv DIR              virtualenv to activate in the job     [default .venv of the checkout, if any]
  --setup CMD             a shell line run before srun, e.g. 'module load cuda/12.4'
  --install               pip install the checkout and "jax[cuda12]" into the venv first (once, first node)
  --jax SPEC              the jax requirement for --install     [default "jax[cuda12]"]
  --port PORT             coordinator port                      [default 61440 + job id % 4096, as jax does]
Run
  --config FILE           config file, relative to the checkout [default configs/bert_base.py]
  --workdir DIR           --workdir of bert_jax.main (shared path or gs://...)   [required]
  --data PATH             sets --config.data.source=text --config.data.path=PATH
  --log-dir DIR           sbatch script and job log (%x-%j.out) [default workdirs/slurm in the checkout]
  --follow                after submitting, stream the job log until the job ends
  --dry-run               print the sbatch script and the sbatch command, submit nothing
  -h, --help
Everything after -- goes to `python -m bert_jax.main` unchanged (e.g. --config.train.steps=1000).
EOF
}

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODES=1
GPUS=8
CPUS=
PARTITION=
ACCOUNT=
QOS=
TIME=
JOB_NAME=bert-jax
SBATCH_ARGS=()
VENV=
VENV_SET=0
SETUP=
INSTALL=0
JAX_SPEC='jax[cuda12]'
PORT=
CONFIG=configs/bert_base.py
WORKDIR=
DATA=
LOG_DIR="$REPO_ROOT/workdirs/slurm"
FOLLOW=0
DRY_RUN=0
MAIN_ARGS=()

while (($#)); do
  arg=$1
  shift
  value=
  case $arg in
    --*=*)
      value=${arg#*=}
      arg=${arg%%=*}
      ;;
    --nodes | --gpus-per-node | --cpus-per-task | --partition | --account | --qos | --time | --job-name | --sbatch-arg | \
      --venv | --setup | --jax | --port | --config | --workdir | --data | --log-dir)
      (($#)) || die "$arg needs a value"
      value=$1
      shift
      ;;
  esac
  case $arg in
    --nodes) NODES=$value ;;
    --gpus-per-node) GPUS=$value ;;
    --cpus-per-task) CPUS=$value ;;
    --partition) PARTITION=$value ;;
    --account) ACCOUNT=$value ;;
    --qos) QOS=$value ;;
    --time) TIME=$value ;;
    --job-name) JOB_NAME=$value ;;
    --sbatch-arg) SBATCH_ARGS+=("$value") ;;
    --venv)
      VENV=$value
      VENV_SET=1
      ;;
    --setup) SETUP=$value ;;
    --jax) JAX_SPEC=$value ;;
    --port) PORT=$value ;;
    --config) CONFIG=$value ;;
    --workdir) WORKDIR=$value ;;
    --data) DATA=$value ;;
    --log-dir) LOG_DIR=$value ;;
    --install) INSTALL=1 ;;
    --follow) FOLLOW=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      MAIN_ARGS=("$@")
      break
      ;;
    *) die "unknown argument $arg (see --help)" ;;
  esac
done

[[ $NODES =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, not $NODES"
[[ $GPUS =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node must be a positive integer, not $GPUS"
[[ -z $PORT || $PORT =~ ^[0-9]+$ ]] || die "--port must be a number, not $PORT"
[[ -n $WORKDIR ]] || die "pass --workdir=DIR (a path every node sees, or gs://...)"
if ((!VENV_SET)) && [[ -d $REPO_ROOT/.venv ]]; then
  VENV="$REPO_ROOT/.venv"
fi
PROCESSES=$((NODES * GPUS))


python_cmd=(python -m bert_jax.main "--config=$CONFIG" "--workdir=$WORKDIR")
if [[ -n $DATA ]]; then
  python_cmd+=(--config.data.source=text "--config.data.path=$DATA")
fi
python_cmd+=("${MAIN_ARGS[@]}")

# What each task runs: its process id and GPU from SLURM's task variables. If the site binds
# one GPU per task (CUDA_VISIBLE_DEVICES has one entry), that GPU is device 0.
# shellcheck disable=SC2016  # expanded in the task, not here
task_env='export JAX_PROCESS_ID=$SLURM_PROCID; if [ "$(echo "${CUDA_VISIBLE_DEVICES:-}" | tr , "\n" | grep -c .)" = 1 ]; then export JAX_LOCAL_DEVICE_IDS=0; else export JAX_LOCAL_DEVICE_IDS=$SLURM_LOCALID; fi; exec '
task="$task_env$(qargs "${python_cmd[@]}")"
srun_cmd=(srun "--nodes=$NODES" "--ntasks-per-node=$GPUS" "--gpus-per-node=$GPUS")
if [[ -n $CPUS ]]; then # srun does not inherit sbatch's --cpus-per-task (SLURM >= 22.05)
  srun_cmd+=("--cpus-per-task=$CPUS")
fi
srun_cmd+=(--kill-on-bad-exit=1 --label bash -c "$task")

# shellcheck disable=SC2016  # the job's own variables, expanded when the job runs
sbatch_script() {
  echo '#!/bin/bash'
  echo "#SBATCH --job-name=$JOB_NAME"
  echo "#SBATCH --nodes=$NODES"
  echo "#SBATCH --ntasks-per-node=$GPUS"
  echo "#SBATCH --gpus-per-node=$GPUS"
  [[ -z $CPUS ]] || echo "#SBATCH --cpus-per-task=$CPUS"
  [[ -z $PARTITION ]] || echo "#SBATCH --partition=$PARTITION"
  [[ -z $ACCOUNT ]] || echo "#SBATCH --account=$ACCOUNT"
  [[ -z $QOS ]] || echo "#SBATCH --qos=$QOS"
  [[ -z $TIME ]] || echo "#SBATCH --time=$TIME"
  local a
  for a in "${SBATCH_ARGS[@]}"; do
    echo "#SBATCH $a"
  done
  echo "#SBATCH --chdir=$REPO_ROOT"
  echo "#SBATCH --output=$LOG_DIR/%x-%j.out"
  echo 'set -eo pipefail' # not -u: some `module` and venv scripts read unset variables
  [[ -z $SETUP ]] || echo "$SETUP"
  [[ -z $VENV ]] || echo "source $(q "$VENV/bin/activate")"
  if ((INSTALL)); then
    echo "python -m pip install --quiet --upgrade pip"
    echo "python -m pip install --quiet . $(q "$JAX_SPEC")"
  fi
  echo 'coordinator=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)' # reads all: no SIGPIPE
  if [[ -n $PORT ]]; then
    echo "export JAX_COORDINATOR_ADDRESS=\"\$coordinator:$PORT\""
  else
    echo 'export JAX_COORDINATOR_ADDRESS="$coordinator:$((61440 + SLURM_JOB_ID % 4096))"'
  fi
  echo "export JAX_NUM_PROCESSES=$PROCESSES"
  echo 'echo "bert_jax: $JAX_NUM_PROCESSES processes, coordinator $JAX_COORDINATOR_ADDRESS"'
  qargs "${srun_cmd[@]}"
  echo
}

script_path="$LOG_DIR/$JOB_NAME.sbatch"
if ((DRY_RUN)); then
  echo "# --- $script_path ---"
  sbatch_script
  echo "# --- end of $script_path ---"
  printf '+ %s\n' "$(qargs sbatch --parsable "$script_path")"
  exit 0
fi

mkdir -p "$LOG_DIR"
sbatch_script >"$script_path"
printf '+ %s\n' "$(qargs sbatch --parsable "$script_path")"
job_id=$(sbatch --parsable "$script_path")
job_id=${job_id%%;*}
log="$LOG_DIR/$JOB_NAME-$job_id.out"
echo "submitted job $job_id; log: $log"
if ((FOLLOW)); then
  tail -n +1 -F "$log" &
  tail_pid=$!
  trap 'kill "$tail_pid" 2>/dev/null || true' EXIT
  while [[ -n $(squeue --noheader --jobs="$job_id" 2>/dev/null) ]]; do
    sleep 15
  done
  sleep 2
  sacct --noheader --jobs="$job_id" --format=JobID,State,ExitCode 2>/dev/null | head -n 1 || true
fi
