# shellcheck shell=bash
# Helpers shared by launch/tpu_vm.sh and launch/gpu_slurm.sh (sourced, not run).

# die MESSAGE: the script's name and MESSAGE on stderr, exit 2.
die() {
  echo "${0##*/}: $*" >&2
  exit 2
}

# q WORD: WORD quoted for a POSIX shell; a --flag=value keeps --flag= outside the quotes.
q() {
  local s=$1 prefix=
  if [[ $s =~ ^(--[A-Za-z0-9._-]+=)(.*)$ ]]; then
    prefix=${BASH_REMATCH[1]}
    s=${BASH_REMATCH[2]}
  fi
  if [[ -n $s && $s =~ ^[A-Za-z0-9_./:=@,+%^-]+$ ]]; then
    printf '%s%s' "$prefix" "$s"
  else
    printf "%s'%s'" "$prefix" "${s//\'/\'\\\'\'}"
  fi
}

# qargs WORD...: the words quoted and joined by spaces.
qargs() {
  local out=() w
  for w in "$@"; do
    out+=("$(q "$w")")
  done
  printf '%s' "${out[*]}"
}
