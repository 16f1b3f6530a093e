#!/usr/bin/env bash
# Pretrain or fine-tune bert_jax on a Cloud TPU VM (single host or pod slice).
#
#   launch/tpu_vm.sh [FLAGS] [STEP] [-- ARGS FOR bert_jax.main]
#
# STEP is one of
#   all      (default) create -> install -> train -> logs -> delete
#   create   create the TPU VM (or queued resource with --queued) and wait until it is ready
#   install  put the source on every worker (git clone, or a git-archive tarball) and pip install it
#   train    start `python3 -m bert_jax.main` on every worker, detached (nohup), logging to
#            ~/bert_jax_run/train.log on each worker; returns at once
#   logs     stream worker 0's log until its run ends; exits with the run's exit status
#   delete   delete the TPU VM / queued resource
# In `all` the VM is deleted when the script exits, also on failure or Ctrl-C, unless --keep.
# --dry-run prints every command ("+ " and the command, shell-quoted) and runs nothing.
# Run with --help for the flags.
set -euo pipefail
# shellcheck source=launch/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
usage: launch/tpu_vm.sh [FLAGS] [all|create|install|train|logs|delete] [-- MAIN_ARGS...]

TPU
  --name NAME              TPU VM / queued-resource name       [$TPU_NAME, default bert-jax-$USER]
  --zone ZONE              zone                                [$TPU_ZONE, default us-central2-b]
  --project PROJECT        GCP project                         [$TPU_PROJECT, default: gcloud's configured one]
  --accelerator-type TYPE  e.g. v4-32, v5p-64, v5litepod-16    [$TPU_ACCELERATOR_TYPE, default v4-8]
  --runtime-version V      TPU software version                [default: from the accelerator type]
  --queued                 create through `queued-resources create` (waits in the queue for capacity)
  --spot                   Spot (preemptible) capacity
  --keep                   `all`: do not delete the VM at the end
Source
  --repo-url URL           git URL every worker clones          [$BERT_JAX_REPO_URL]
  --ref REF                branch, tag or commit to check out   [$BERT_JAX_REF, default main]
  --local                  copy this checkout's HEAD (git archive) instead of cloning;
                           the default when no --repo-url is given
  --jax SPEC               the jax requirement pip installs     [default "jax[tpu]"]
Run
  --config FILE            config file, relative to the repo    [default configs/bert_base.py]
  --bucket gs://BUCKET     default workdir: gs://BUCKET/workdirs/NAME   [$BERT_JAX_BUCKET]
  --workdir DIR            --workdir of bert_jax.main (use gs://... : the VM's disk goes with it)
  --data PATH              sets --config.data.source=text --config.data.path=PATH
  --stage-data             --data is a gs:// folder of text files: each worker first copies it
                           (gcloud storage rsync) to ~/bert_jax_data and trains from that copy
  --dry-run                print the commands, run nothing
  -h, --help
Everything after -- goes to `python3 -m bert_jax.main` unchanged (e.g. --config.train.steps=1000).
EOF
}

NAME=${TPU_NAME:-}
ZONE=${TPU_ZONE:-us-central2-b}
PROJECT=${TPU_PROJECT:-}
ACCELERATOR_TYPE=${TPU_ACCELERATOR_TYPE:-v4-8}
RUNTIME_VERSION=
QUEUED=0
SPOT=0
KEEP=0
REPO_URL=${BERT_JAX_REPO_URL:-}
REF=${BERT_JAX_REF:-main}
LOCAL=0
JAX_SPEC='jax[tpu]'
CONFIG=configs/bert_base.py
BUCKET=${BERT_JAX_BUCKET:-}
WORKDIR=
DATA=
STAGE_DATA=0
DRY_RUN=0
STEP=all
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
    --name | --zone | --project | --accelerator-type | --runtime-version | --repo-url | --ref | --jax | --config | --bucket | --workdir | --data)
      (($#)) || die "$arg needs a value"
      value=$1
      shift
      ;;
  esac
  case $arg in
    --name) NAME=$value ;;
    --zone) ZONE=$value ;;
    --project) PROJECT=$value ;;
    --accelerator-type) ACCELERATOR_TYPE=$value ;;
    --runtime-version) RUNTIME_VERSION=$value ;;
    --repo-url) REPO_URL=$value ;;
    --ref) REF=$value ;;
    --jax) JAX_SPEC=$value ;;
    --config) CONFIG=$value ;;
    --bucket) BUCKET=$value ;;
    --workdir) WORKDIR=$value ;;
    --data) DATA=$value ;;
    --queued) QUEUED=1 ;;
    --spot) SPOT=1 ;;
    --keep) KEEP=1 ;;
    --local) LOCAL=1 ;;
    --stage-data) STAGE_DATA=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      MAIN_ARGS=("$@")
      break
      ;;
    all | create | install | train | logs | delete) STEP=$arg ;;
    *) die "unknown argument $arg (see --help)" ;;
  esac
done

if [[ -z $NAME ]]; then
  user=${USER:-user}
  user=${user,,}
  NAME="bert-jax-${user//[^a-z0-9-]/-}"
fi
if [[ -z $RUNTIME_VERSION ]]; then
  case $ACCELERATOR_TYPE in
    v5litepod-* | v5e-*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    *) RUNTIME_VERSION=tpu-ubuntu2204-base ;; # v2, v3, v4
  esac
fi
if [[ -z $REPO_URL ]]; then
  LOCAL=1
fi
if [[ -z $WORKDIR && -n $BUCKET ]]; then
  WORKDIR="${BUCKET%/}/workdirs/$NAME"
fi
if [[ $STEP == all || $STEP == train ]]; then
  [[ -n $WORKDIR ]] || die "pass --workdir=gs://... or --bucket=gs://... (the VM's disk is deleted with it)"
  ((!STAGE_DATA)) || [[ $DATA == gs://* ]] || die "--stage-data needs --data=gs://..."
fi

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARBALL="${TMPDIR:-/tmp}/$NAME-bert_jax.tar.gz"
RUN_DIR="\$HOME/bert_jax_run" # on the workers; $HOME is expanded there
SRC_DIR="\$HOME/bert_jax"
GCLOUD_TPU=(gcloud compute tpus)
ZONE_ARGS=("--zone=$ZONE")
if [[ -n $PROJECT ]]; then
  ZONE_ARGS+=("--project=$PROJECT")
fi


# run CMD...: print it (+ CMD); run it unless --dry-run.
run() {
  printf '+ %s\n' "$(qargs "$@")"
  if ((!DRY_RUN)); then
    "$@"
  fi
}

ssh_workers() { # WORKER COMMAND
  run "${GCLOUD_TPU[@]}" tpu-vm ssh "$NAME" "${ZONE_ARGS[@]}" "--worker=$1" "--command=$2"
}

do_create() {
  local capacity=()
  if ((SPOT)); then
    capacity=(--spot)
  fi
  if ((QUEUED)); then
    run "${GCLOUD_TPU[@]}" queued-resources create "$NAME" "${ZONE_ARGS[@]}" "--node-id=$NAME" \
      "--accelerator-type=$ACCELERATOR_TYPE" "--runtime-version=$RUNTIME_VERSION" "${capacity[@]}"
    local describe=("${GCLOUD_TPU[@]}" queued-resources describe "$NAME" "${ZONE_ARGS[@]}" '--format=value(state.state)')
    if ((DRY_RUN)); then
      run "${describe[@]}"
      echo "# (repeated every 60 s until the state is ACTIVE)"
      return
    fi
    local state
    while true; do
      state=$(run "${describe[@]}" | tail -n 1)
      echo "queued resource $NAME: $state"
      case $state in
        ACTIVE) break ;;
        FAILED | SUSPENDED) die "queued resource $NAME is $state" ;;
      esac
      sleep 60
    done
  else
    run "${GCLOUD_TPU[@]}" tpu-vm create "$NAME" "${ZONE_ARGS[@]}" \
      "--accelerator-type=$ACCELERATOR_TYPE" "--version=$RUNTIME_VERSION" "${capacity[@]}"
  fi
}

do_install() {
  local fetch
  if ((LOCAL)); then
    run git -C "$REPO_ROOT" archive --format=tar.gz --prefix=bert_jax/ "--output=$TARBALL" HEAD
    run "${GCLOUD_TPU[@]}" tpu-vm scp "$TARBALL" "$NAME:bert_jax.tar.gz" "${ZONE_ARGS[@]}" --worker=all
    fetch="tar -xzf \$HOME/bert_jax.tar.gz -C \$HOME"
  else
    fetch="git clone --quiet $(q "$REPO_URL") $SRC_DIR && git -C $SRC_DIR checkout --quiet $(q "$REF")"
  fi
  ssh_workers all "set -e; rm -rf $SRC_DIR; $fetch; python3 -m pip install --quiet --upgrade pip;\
 python3 -m pip install --quiet \"${SRC_DIR}[gcs]\" $(q "$JAX_SPEC")"
}

do_train() {
  local python=(python3 -m bert_jax.main "--config=$CONFIG" "--workdir=$WORKDIR") stage=
  if ((STAGE_DATA)); then # relative to the run's folder, ~/bert_jax
    python+=(--config.data.source=text --config.data.path=../bert_jax_data)
    stage="mkdir -p \$HOME/bert_jax_data && gcloud storage rsync --recursive $(q "$DATA") \$HOME/bert_jax_data && "
  elif [[ -n $DATA ]]; then
    python+=(--config.data.source=text "--config.data.path=$DATA")
  fi
  python+=("${MAIN_ARGS[@]}")
  # BERT_JAX_DISTRIBUTED=1: bert_jax.main calls jax.distributed.initialize(), which finds the
  # other workers of the slice itself.
  local job
  job="{ ${stage}BERT_JAX_DISTRIBUTED=1 $(qargs "${python[@]}"); } > $RUN_DIR/train.log 2>&1; echo \$? > $RUN_DIR/rc"
  if [[ $WORKDIR == gs://* ]]; then # keep every worker's log after the VM is gone
    job+="; gcloud storage cp $RUN_DIR/train.log $(q "${WORKDIR%/}/logs")/\$(hostname).log || true"
  fi
  ssh_workers all "mkdir -p $RUN_DIR && rm -f $RUN_DIR/rc $RUN_DIR/train.log && cd $SRC_DIR &&\
 nohup setsid bash -c $(q "$job") > /dev/null 2>&1 < /dev/null &"
}

do_logs() {
  local follow="tail -n +1 -F $RUN_DIR/train.log & t=\$!; while [ ! -f $RUN_DIR/rc ]; do sleep 10; done;\
 sleep 1; kill \$t; exit \"\$(cat $RUN_DIR/rc)\""
  if ((DRY_RUN)); then
    ssh_workers 0 "$follow"
    return
  fi
  local attempt rc
  for attempt in 1 2 3 4 5; do # 255: the ssh connection dropped; the run goes on, so reattach
    rc=0
    ssh_workers 0 "$follow" || rc=$?
    if ((rc != 255)); then
      return "$rc"
    fi
    echo "tpu_vm.sh: lost the log stream (attempt $attempt); reattaching in 30 s" >&2
    sleep 30
  done
  return "$rc"
}

do_delete() {
  if ((QUEUED)); then
    run "${GCLOUD_TPU[@]}" queued-resources delete "$NAME" "${ZONE_ARGS[@]}" --force --quiet
  else
    run "${GCLOUD_TPU[@]}" tpu-vm delete "$NAME" "${ZONE_ARGS[@]}" --quiet
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((KEEP)); then
    echo "# --keep: $NAME is still running; delete it with: launch/tpu_vm.sh --name=$NAME --zone=$ZONE delete"
  else
    do_delete || echo "tpu_vm.sh: could not delete $NAME; delete it by hand" >&2
  fi
  exit "$rc"
}

case $STEP in
  all)
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    do_create
    do_install
    do_train
    do_logs
    ;;
  create) do_create ;;
  install) do_install ;;
  train) do_train ;;
  logs) do_logs ;;
  delete) do_delete ;;
esac
