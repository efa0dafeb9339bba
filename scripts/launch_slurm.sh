#!/bin/bash
# Multi-node training under SLURM: one torchrun per node (srun starts it), and torchrun starts one
# training process per GPU. The nodes meet through torchrun's c10d rendezvous on the job's first node.
#
#   sbatch scripts/launch_slurm.sh                                  # 2 nodes x 8 GPUs, the flags below
#   sbatch --nodes 4 scripts/launch_slurm.sh --max_iters 40000      # extra arguments go to the program
#   RUN_DIR=runs/big CONFIG=my.toml sbatch scripts/launch_slurm.sh   # any of the variables below
#
# Preemption and time limits: the job is requeueable, and every launch passes --resume, so a
# preempted or requeued job (same SLURM_JOB_ID, same RUN_DIR) continues from its newest intact
# checkpoint. SLURM sends SIGTERM to every task before it kills a job (preemption, scancel, requeue);
# torchrun passes it to the training processes, which finish the current step, write a checkpoint and
# exit 0 (a checkpoint still being written when SLURM's KillWait runs out is lost; the previous one
# stays intact). Near the time limit the --signal line below makes this script requeue the job itself.
#
# Not run on a cluster here (there is no SLURM on the development machine): tests/test_launch_slurm.py
# checks the syntax and runs it with stand-ins for srun and scontrol, parsing the command it builds
# with torchrun's and the training program's own parsers; tests/test_multinode.py runs the same kind
# of torchrun command as two "nodes" on one host.
#
# Environment variables this script reads (SLURM sets the SLURM_* ones in every job):
#   SLURM_JOB_NODELIST    the job's nodes; the first one hosts the rendezvous
#   SLURM_NNODES          how many nodes (torchrun --nnodes)
#   SLURM_JOB_ID          the rendezvous id (unique per job, and unchanged when the job is requeued)
#   SLURM_GPUS_PER_NODE   GPUs per node from --gpus-per-node ("8" or "h100:8"): torchrun --nproc_per_node
#   SLURM_CPUS_PER_TASK   CPUs for each node's torchrun (newer srun no longer inherits it from sbatch)
#   SLURM_RESTART_COUNT   how many times the job has been requeued (only printed)
#   RUN_DIR               checkpoints, metrics.jsonl, run_config.json; must be on a file system every
#                         node sees (only global rank 0 writes, but every rank reads it to resume)
#   CONFIG                a TOML file of training settings (data paths, model, schedule); the data paths
#                         in it must exist on every node (a shared file system, or the same local copy)
#   RDZV_PORT             the rendezvous port on the first node (default 29500)
#   TORCHRUN              torchrun from the project's environment (default .venv/bin/torchrun in the
#                         submit directory, which every node must see)
# torchrun in turn sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT for every training
# process; the program reads RANK (rank 0 writes), LOCAL_RANK (which GPU) and WORLD_SIZE.
#
#SBATCH --job-name=cs336-lm
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
# (--ntasks-per-node=1: one torchrun per node, it starts the per-GPU processes itself. --requeue: a
# preempted job goes back to the queue instead of failing. --signal=B:USR1@300: 5 minutes before the
# time limit SLURM sends USR1 to this batch shell, which requeues the job. --open-mode=append: a
# requeued job appends to the same log.)

set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-.}"
RUN_DIR=${RUN_DIR:-runs/slurm_${SLURM_JOB_ID}}
CONFIG=${CONFIG:-}
RDZV_PORT=${RDZV_PORT:-29500}
TORCHRUN=${TORCHRUN:-$PWD/.venv/bin/torchrun}
GPUS_PER_NODE=${SLURM_GPUS_PER_NODE:-8}
GPUS_PER_NODE=${GPUS_PER_NODE##*:} # "h100:8" -> "8"

# The rendezvous endpoint: the first node of the allocation (every node computes the same name).
# (pipefail off in this subshell: head exits after one line, and scontrol, still writing the other
# names, then dies of SIGPIPE, which pipefail would turn into a failed script.)
HEAD_NODE=$(set +o pipefail; scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
if [[ -z "$HEAD_NODE" ]]; then
    echo "error: scontrol show hostnames gave no node for SLURM_JOB_NODELIST=${SLURM_JOB_NODELIST}" >&2
    exit 2
fi

# Each training process runs one GPU; a few CPU threads each for the data loading and the host side.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
# Give each restart of the workers a fresh TCP store: torchrun's default shares the agents'
# rendezvous store with the workers, and after a restart a worker can read a peer's address from
# the previous attempt (pytorch/pytorch issue 135712), so the restarted group fails to connect.
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
# Uncomment when NCCL picks the wrong network interface (the names are cluster-specific):
# export NCCL_SOCKET_IFNAME=ib0
# export NCCL_DEBUG=WARN

CONFIG_ARGS=()
if [[ -n "$CONFIG" ]]; then
    CONFIG_ARGS=(--config "$CONFIG")
fi

echo "job ${SLURM_JOB_ID} (requeued ${SLURM_RESTART_COUNT:-0} times): ${SLURM_NNODES} nodes x ${GPUS_PER_NODE} GPUs," \
    "rendezvous ${HEAD_NODE}:${RDZV_PORT}, run directory ${RUN_DIR}"

# USR1 (near the time limit): put the job back in the queue. SLURM then sends SIGTERM to the tasks,
# the training processes checkpoint and exit, and the requeued job resumes from that checkpoint.
trap 'echo "time limit near: requeueing job ${SLURM_JOB_ID}"; scontrol requeue "${SLURM_JOB_ID}"' USR1

# --max_restarts: a crashed training process (any node) restarts the whole group from the newest
# checkpoint, without giving the allocation back. --kill-on-bad-exit: if one node's torchrun gives up,
# SLURM ends the others instead of leaving them waiting.
srun --ntasks-per-node=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-32}" --kill-on-bad-exit=1 \
    "$TORCHRUN" \
    --nnodes "$SLURM_NNODES" \
    --nproc_per_node "$GPUS_PER_NODE" \
    --rdzv_backend c10d \
    --rdzv_endpoint "${HEAD_NODE}:${RDZV_PORT}" \
    --rdzv_id "$SLURM_JOB_ID" \
    --max_restarts 3 \
    -m cs336_basics.training_together \
    ${CONFIG_ARGS[@]+"${CONFIG_ARGS[@]}"} \
    --device cuda \
    --dtype bf16 \
    --checkpoint_dir "$RUN_DIR" \
    --resume \
    "$@" &
SRUN_PID=$!
# `wait` returns early when a trapped signal arrives; wait again until srun itself has ended.
while true; do
    set +e
    wait "$SRUN_PID"
    status=$?
    set -e
    if ! kill -0 "$SRUN_PID" 2>/dev/null; then
        break
    fi
done
exit "$status"
