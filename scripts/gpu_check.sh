#!/usr/bin/env bash
# GPU check: one command that exercises the CUDA paths and writes ONE summary file.
#
#   bash scripts/gpu_check.sh [SUMMARY_FILE]
#
# Runs on a machine with no internet and no uv: the image's python3 with PYTHONPATH=. (needs torch,
# numpy, regex, einops, jaxtyping, pytest). Without CUDA it says so and exits 0. With CUDA, each step
# is time-boxed (`timeout`), logged under the work dir, and a failure does not stop the next step.
# The timed steps run first, alone on the GPU:
#   e. scripts/bench_model.py at the course's TinyStories shape (d_model 512, 4 layers, 16 heads,
#      d_ff 1344, context 256, vocab 10k), bf16 + compile: our fast path, our plain path and the
#      built-in model with F.scaled_dot_product_attention side by side (tok/s, MFU, peak memory, the
#      projected time for 327,680,000 tokens); generation tok/s
#   h. the same at the leaderboard preset's shape (cs336_basics/tools/experiments/leaderboard.toml:
#      d_model 768, 12 layers, 12 heads, d_ff 2048, context 512, vocab 32k, batch 128)
#   f. the training program at the TinyStories shape, bf16 + compile at a GPU-filling batch: tokens/s,
#      MFU and the projected time for 327,680,000 tokens
# then two lanes side by side (their timings are not the point):
#   i. a real run: a BPE tokenizer trained on $GPU_CHECK_TEXT, the text tokenized, the training program
#      (bf16 + compile, the default loop) at the TinyStories shape for a few hundred steps, evaluated on
#      $GPU_CHECK_VALID_TEXT; the loss must fall with no non-finite step; then `generate` from it
#   a. the gpu-marked tests (python3 -m pytest -m gpu)
#   b. training_together on synthetic ids, --device cuda, fp32 / bf16 / fp16 (grad scaler) eager,
#      bf16 compiled: final loss and tokens/s from metrics.jsonl
#   c. a 1-process run through torch.distributed.run, and an NCCL all_reduce under it
#   d. resuming a GPU checkpoint from (b) on the CPU
# and last, while the budget lasts:
#   g. the GPU-ready loop: the TinyStories-shape run with --prefetch and --no-prefetch (tokens/s each;
#      both must end on the same loss)
#   b. compiled fp32 and fp16
# The whole check stops starting new steps when its budget (GPU_CHECK_BUDGET_S, default 480 s) is
# spent; skipped steps are listed as SKIP.
#
# Environment:
#   GPU_CHECK_SUMMARY    summary path (default: $OUT/gpu_check_summary.md if $OUT is set,
#                        else gpu_check_summary.md); the first argument wins over both
#   GPU_CHECK_WORKDIR    data, run directories and logs (default: a fresh gpu_check/run_<time>/)
#   GPU_CHECK_BUDGET_S   overall time budget in seconds (default 480)
#   GPU_CHECK_TS_BATCH   batch size for steps e, f, g (default 128)
#   GPU_CHECK_TEXT       UTF-8 training text for step i (documents separated by <|endoftext|>,
#                        e.g. a TinyStories file); without it step i is skipped
#   GPU_CHECK_VALID_TEXT validation text for step i (default: the last 10% of the tokenized text)
#   GPU_CHECK_TEXT_ITERS steps of the real run (default 600)
#   GPU_CHECK_FORCE_CPU=1  dry run of the plumbing on the CPU: steps a-d, i and a tiny f with
#                        --device cpu, fp32/bf16 only, no compile, no bench (e, h)
#   PYTHON               interpreter (default python3)
set -u
cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-python3}"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
FORCE_CPU="${GPU_CHECK_FORCE_CPU:-0}"
BUDGET="${GPU_CHECK_BUDGET_S:-480}"
TS_BATCH="${GPU_CHECK_TS_BATCH:-128}"
if [ -n "${1:-}" ]; then SUMMARY="$1"
elif [ -n "${GPU_CHECK_SUMMARY:-}" ]; then SUMMARY="$GPU_CHECK_SUMMARY"
elif [ -n "${OUT:-}" ]; then SUMMARY="$OUT/gpu_check_summary.md"
else SUMMARY="gpu_check_summary.md"; fi

if ! command -v "$PY" >/dev/null 2>&1; then echo "error: $PY not found (set PYTHON=...)" >&2; exit 2; fi
# Cheap first (importing torch takes seconds, many on a busy machine): CUDA_VISIBLE_DEVICES set to
# nothing (or -1) hides every GPU, so there is nothing to ask torch; otherwise one interpreter both
# imports torch and asks it.
if [ "$FORCE_CPU" != "1" ] && [ "${CUDA_VISIBLE_DEVICES-unset}" != "unset" ] \
    && { [ -z "$CUDA_VISIBLE_DEVICES" ] || [ "$CUDA_VISIBLE_DEVICES" = "-1" ]; }; then
    HAS_CUDA=0
elif ! HAS_CUDA=$("$PY" -c "import torch; print(1 if torch.cuda.is_available() else 0)" 2>/dev/null); then
    echo "error: $PY cannot import torch" >&2; exit 2
fi
if [ "$HAS_CUDA" != "1" ] && [ "$FORCE_CPU" != "1" ]; then
    echo "No CUDA device on this machine: nothing to check (GPU_CHECK_FORCE_CPU=1 runs the plumbing on the CPU)."
    exit 0
fi
if [ "$FORCE_CPU" = "1" ]; then
    # The CPU is much slower and may be shared: longer limits, a smaller batch, a bigger budget.
    DEV=cpu; MODE="CPU dry run (GPU_CHECK_FORCE_CPU=1)"; LIMIT_SCALE=4; TINY_BATCH=4; BUDGET="${GPU_CHECK_BUDGET_S:-1800}"
else
    DEV=cuda; MODE="CUDA"; LIMIT_SCALE=1; TINY_BATCH=16
fi

WORK="${GPU_CHECK_WORKDIR:-gpu_check/run_$(date +%Y%m%d_%H%M%S)_$$}"
mkdir -p "$WORK/logs" "$(dirname "$SUMMARY")" || exit 2
RESULTS="$WORK/results.md"
: > "$RESULTS"
T0=$(date +%s)
HELPER="$PY scripts/gpu_check_helper.py"

elapsed() { echo $(( $(date +%s) - T0 )); }

# run_step NAME TIMEOUT_S CMD...: time-boxed, logged to $WORK/logs/NAME.log, never aborts the script.
# Sets STEP_RC (124 = timed out, 200 = skipped for budget).
run_step() {
    local name="$1" limit=$(( $2 * LIMIT_SCALE )); shift 2
    local left=$(( BUDGET - $(elapsed) ))
    if [ "$left" -lt 20 ]; then
        echo "- SKIP $name: time budget (${BUDGET}s) spent" >> "$RESULTS"
        echo "== $name: SKIP (budget spent)"
        STEP_RC=200; return
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    echo "== $name (limit ${limit}s): $*"
    local t1; t1=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
    STEP_RC=$?
    STEP_S=$(( $(date +%s) - t1 ))
    if [ "$STEP_RC" -eq 0 ]; then echo "   ok (${STEP_S}s)"
    elif [ "$STEP_RC" -eq 124 ] || [ "$STEP_RC" -eq 137 ]; then echo "   TIMEOUT after ${STEP_S}s (log: $WORK/logs/$name.log)"
    else echo "   FAILED rc=$STEP_RC after ${STEP_S}s (log: $WORK/logs/$name.log)"; tail -n 5 "$WORK/logs/$name.log" | sed 's/^/   | /'; fi
}

# record NAME DETAIL: one PASS/FAIL line for the last step (the last log line on failure).
record() {
    local name="$1" detail="$2"
    if [ "$STEP_RC" -eq 200 ]; then return; fi
    if [ "$STEP_RC" -eq 0 ]; then
        echo "- PASS $name (${STEP_S}s): $detail" >> "$RESULTS"
    else
        local why="rc=$STEP_RC"
        { [ "$STEP_RC" -eq 124 ] || [ "$STEP_RC" -eq 137 ]; } && why="timed out after ${STEP_S}s"
        local last; last=$(grep -v '^\s*$' "$WORK/logs/$name.log" 2>/dev/null | tail -n 1 | cut -c1-300)
        echo "- FAIL $name ($why): ${last} [log: $WORK/logs/$name.log]" >> "$RESULTS"
    fi
}

# Tiny model for the dtype/compile/NCCL/resume runs; learnable synthetic ids so loss must fall.
TINY=(--vocab_size 256 --context_length 64 --d_model 64 --num_layers 2 --num_heads 4 --d_ff 128
      --batch_size "$TINY_BATCH" --lr 1e-2 --min_lr 1e-3 --warmup_iters 3 --log_interval 5 --eval_interval 30
      --eval_iters 4 --checkpoint_interval 30 --heartbeat_s 0 --seed 0)
TS=(--vocab_size 10000 --context_length 256 --d_model 512 --num_layers 4 --num_heads 16 --d_ff 1344
    --lr 1e-3 --skip_validation --heartbeat_s 0 --seed 0)

# train_run NAME TIMEOUT EXTRA_FLAGS...: one tiny training run into $WORK/NAME; records its numbers.
train_run() {
    local name="$1" limit="$2"; shift 2
    run_step "$name" "$limit" "$PY" -m cs336_basics.training_together \
        --train_data_path "$WORK/tiny_train.npy" --val_data_path "$WORK/tiny_valid.npy" \
        "${TINY[@]}" --max_iters 30 --checkpoint_dir "$WORK/$name" "$@"
    local detail=""
    [ "$STEP_RC" -eq 0 ] && detail=$($HELPER summary "$WORK/$name" --skip_steps 10 2>&1)
    record "$name" "$detail"
}

echo "GPU check ($MODE): work dir $WORK, summary $SUMMARY, budget ${BUDGET}s"

# Data -----------------------------------------------------------------------------------------
run_step data 120 bash -c "$HELPER data '$WORK/tiny_train.npy' --vocab 256 --tokens 200000 --seed 0 && \
    $HELPER data '$WORK/tiny_valid.npy' --vocab 256 --tokens 20000 --seed 1 && \
    $HELPER data '$WORK/ts_train.npy' --vocab 10000 --tokens 4000000 --seed 2"
record data "synthetic ids in $WORK"

# e. model benchmark at the TinyStories shape (ours vs the built-in model; bf16 + compile) ---------
if [ "$DEV" = cuda ]; then
    run_step e_bench_model 200 "$PY" scripts/bench_model.py --device cuda --shapes tinystories \
        --precisions bf16 --modes compile --attention fast plain --reps 3 --steps 10 --warmup 3 \
        --gpu_batch_size "$TS_BATCH" --gen_tokens 100
    record e_bench_model "$(grep -E '^\| tinystories' "$WORK/logs/e_bench_model.log" | head -n 1)"
fi

# h. model benchmark at the leaderboard preset's shape -------------------------------------------
if [ "$DEV" = cuda ]; then
    run_step h_bench_leaderboard 220 "$PY" scripts/bench_model.py --device cuda --shapes leaderboard \
        --precisions bf16 --modes compile --attention fast plain --reps 3 --steps 5 --warmup 3 \
        --gpu_batch_size 128 --gen_tokens 0 --no-activation_checkpointing
    record h_bench_leaderboard "$(grep -E '^\| leaderboard' "$WORK/logs/h_bench_leaderboard.log" | head -n 1)"
fi

# f. the course's TinyStories shape through the training program: projected time for 327,680,000 tokens
if [ "$DEV" = cuda ]; then
    F_FLAGS=(--device cuda --dtype bf16 --compile --tf32 --batch_size "$TS_BATCH" --max_iters 300 --warmup_iters 20 --log_interval 20)
    F_SKIP=60
else  # plumbing only: a few CPU steps at a small batch
    F_FLAGS=(--device cpu --dtype fp32 --batch_size 2 --max_iters 6 --warmup_iters 1 --log_interval 2)
    F_SKIP=2
fi
run_step f_tinystories_shape 150 "$PY" -m cs336_basics.training_together --train_data_path "$WORK/ts_train.npy" \
    "${TS[@]}" "${F_FLAGS[@]}" --checkpoint_interval 100000 --checkpoint_dir "$WORK/f_tinystories_shape"
DETAIL=""
[ "$STEP_RC" -eq 0 ] && DETAIL="$([ "$DEV" = cuda ] && echo "bf16 + compile" || echo "CPU fp32"), batch $([ "$DEV" = cuda ] && echo "$TS_BATCH" || echo 2): $($HELPER project "$WORK/f_tinystories_shape" --tokens 327680000 --skip_steps "$F_SKIP" 2>&1)"
record f_tinystories_shape "$DETAIL"

# i. a real run on text: tokenizer, tokens, the default loop in bf16 + compile, then generate ------
lane_text_run() {
    if [ -z "${GPU_CHECK_TEXT:-}" ]; then
        echo "- SKIP i_text_run: GPU_CHECK_TEXT not set" >> "$RESULTS"; return
    fi
    local valid_text="${GPU_CHECK_VALID_TEXT:-}" iters="${GPU_CHECK_TEXT_ITERS:-600}"
    run_step i_text_data 120 bash -c "$PY -m cs336_basics.train_bpe --input '$GPU_CHECK_TEXT' --vocab_size 10000 \
        --output '$WORK/text_tokenizer' --quiet && \
        $PY -m cs336_basics.tokenize_data --tokenizer '$WORK/text_tokenizer' --input '$GPU_CHECK_TEXT' \
        --output '$WORK/text_train.npy' --quiet && \
        if [ -n '$valid_text' ]; then $PY -m cs336_basics.tokenize_data --tokenizer '$WORK/text_tokenizer' \
        --input '$valid_text' --output '$WORK/text_valid.npy' --quiet; fi"
    record i_text_data "tokenizer (vocab 10000) and ids from $GPU_CHECK_TEXT${valid_text:+ and $valid_text}"
    [ "$STEP_RC" -eq 0 ] || return
    local val=()
    [ -f "$WORK/text_valid.npy" ] && val=(--val_data_path "$WORK/text_valid.npy")
    if [ "$DEV" = cuda ]; then
        I_FLAGS=(--device cuda --dtype bf16 --compile --batch_size 32 --max_iters "$iters" --warmup_iters 40
                 --log_interval 50 --eval_interval 100 --eval_iters 20)
    else
        I_FLAGS=(--device cpu --dtype fp32 --batch_size 2 --context_length 64 --max_iters 12 --warmup_iters 2
                 --log_interval 4 --eval_interval 6 --eval_iters 2)
    fi
    run_step i_text_run 240 "$PY" -m cs336_basics.training_together --train_data_path "$WORK/text_train.npy" \
        "${val[@]}" --vocab_size 10000 --context_length 256 --d_model 512 --num_layers 4 --num_heads 16 \
        --d_ff 1344 --lr 1e-3 --min_lr 1e-4 --heartbeat_s 0 --seed 0 "${I_FLAGS[@]}" \
        --checkpoint_interval 100000 --checkpoint_dir "$WORK/i_text_run"
    DETAIL=""
    if [ "$STEP_RC" -eq 0 ]; then
        DETAIL="$($HELPER summary "$WORK/i_text_run" --skip_steps 50 --expect_drop 1.0 2>&1)"
        grep -q "did not fall\|NON-FINITE" <<< "$DETAIL" && STEP_RC=1
    fi
    record i_text_run "$DETAIL"
    [ "$STEP_RC" -eq 0 ] || return
    run_step i_generate 90 "$PY" -m cs336_basics.generate --checkpoint "$WORK/i_text_run" --device "$DEV" \
        --prompt "Once upon a time" --temperature 0 --max_new_tokens 60
    record i_generate "$(grep -v '^\s*$' "$WORK/logs/i_generate.log" | tail -n 3 | tr '\n' ' ' | cut -c1-400)"
}

# a-d. correctness on tiny models, beside the real run ---------------------------------------------
lane_correctness() {
    # a. gpu-marked tests (only files that have any, so an optional test dependency missing from the
    #    image cannot stop collection)
    mapfile -t GPU_FILES < <(grep -l "mark\.gpu" tests/test_*.py 2>/dev/null)
    if [ "${#GPU_FILES[@]}" -gt 0 ]; then
        run_step a_pytest_gpu 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors "${GPU_FILES[@]}"
        # With CUDA present, "all skipped" means the GPU tests did not actually run: a failure here.
        if [ "$STEP_RC" -eq 0 ] && [ "$DEV" = cuda ] && ! grep -q -E "[0-9]+ passed" "$WORK/logs/a_pytest_gpu.log"; then
            STEP_RC=1; echo "no gpu-marked test ran (all skipped?)" >> "$WORK/logs/a_pytest_gpu.log"
        fi
        record a_pytest_gpu "$(grep -E '(passed|failed|skipped|error|deselected)' "$WORK/logs/a_pytest_gpu.log" | tail -n 1) (${GPU_FILES[*]})"
    else
        echo "- SKIP a_pytest_gpu: no gpu-marked tests found" >> "$RESULTS"
    fi
    # b. dtypes, eager (cheapest and most diagnostic)
    for dt in "${DTYPES[@]}"; do
        train_run "b_${dt}_eager" 90 --device "$DEV" --dtype "$dt"
    done
    # c. one-process NCCL run through torchrun (gloo on the CPU dry run)
    run_step c_ddp_1proc 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
        -m cs336_basics.training_together --train_data_path "$WORK/tiny_train.npy" \
        --val_data_path "$WORK/tiny_valid.npy" "${TINY[@]}" --max_iters 30 --checkpoint_dir "$WORK/c_ddp_1proc" \
        --device "$DEV" --dtype "$([ "$DEV" = cuda ] && echo bf16 || echo fp32)"
    DETAIL=""
    if [ "$STEP_RC" -eq 0 ]; then
        DETAIL="$($HELPER summary "$WORK/c_ddp_1proc" 2>&1); $(grep -i -m1 -E 'world|nccl|gloo|backend' "$WORK/logs/c_ddp_1proc.log" | cut -c1-160)"
    fi
    record c_ddp_1proc "$DETAIL"
    # The trainer skips process groups for a world of one, so check the collective library directly.
    run_step c_collective 90 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 \
        scripts/gpu_check_helper.py collective --device "$DEV"
    record c_collective "$(grep -m1 'all_reduce' "$WORK/logs/c_collective.log" 2>/dev/null)"
    # d. a GPU checkpoint continues on the CPU
    local src=""
    for dt in "${DTYPES[@]}"; do
        if [ -f "$WORK/b_${dt}_eager/checkpoint_iter_30.pt" ]; then src="$WORK/b_${dt}_eager/checkpoint_iter_30.pt"; break; fi
    done
    if [ -n "$src" ]; then
        run_step d_resume_on_cpu 120 "$PY" -m cs336_basics.training_together \
            --train_data_path "$WORK/tiny_train.npy" --val_data_path "$WORK/tiny_valid.npy" "${TINY[@]}" \
            --max_iters 36 --checkpoint_dir "$WORK/d_resume_on_cpu" --device cpu --dtype fp32 --resume_from "$src"
        DETAIL=""
        if [ "$STEP_RC" -eq 0 ]; then
            DETAIL="from $src: $($HELPER summary "$WORK/d_resume_on_cpu" --skip_steps 0 --expect_drop 0 2>&1)"
            [ -f "$WORK/d_resume_on_cpu/checkpoint_iter_36.pt" ] || { STEP_RC=1; DETAIL="no checkpoint_iter_36.pt written"; }
        fi
        record d_resume_on_cpu "$DETAIL"
    else
        echo "- FAIL d_resume_on_cpu: no checkpoint from step b to resume" >> "$RESULTS"
    fi
    # b (continued). torch.compile in bf16, the precision real runs use
    if [ "$DEV" = cuda ]; then
        train_run b_bf16_compile 150 --device cuda --dtype bf16 --compile
    fi
}

if [ "$DEV" = cuda ]; then DTYPES=(fp32 bf16 fp16); else DTYPES=(fp32 bf16); fi
lane_text_run > "$WORK/logs/lane_i.out" 2>&1 &
LANE_I=$!
lane_correctness
wait "$LANE_I"
cat "$WORK/logs/lane_i.out"

# g. the GPU-ready loop: the same TinyStories-shape run with and without --prefetch ---------------
# (the non-finite guard never syncs with the host at any setting but fp16; the same batches in the same
# order either way: on the CPU the losses match exactly, on CUDA to 1e-4, since compiled scatter-adds
# (the embedding's backward) use atomics whose summation order varies from run to run.)
if [ "$DEV" = cuda ]; then
    G_FLAGS=(--device cuda --dtype bf16 --compile --tf32 --batch_size "$TS_BATCH" --max_iters 100 --warmup_iters 10 --log_interval 10)
    G_SKIP=30
else
    G_FLAGS=(--device cpu --dtype fp32 --batch_size 2 --max_iters 4 --warmup_iters 1 --log_interval 1)
    G_SKIP=1
fi
G_RCS=""
for pf in prefetch no-prefetch; do
    run_step "g_loop_$pf" 150 "$PY" -m cs336_basics.training_together --train_data_path "$WORK/ts_train.npy" \
        "${TS[@]}" "${G_FLAGS[@]}" "--$pf" --checkpoint_interval 100000 --checkpoint_dir "$WORK/g_loop_$pf"
    G_RCS="$G_RCS $STEP_RC"
done
DETAIL=""
if [ "$G_RCS" = " 0 0" ]; then
    DETAIL=$($HELPER compare "$WORK/g_loop_prefetch" "$WORK/g_loop_no-prefetch" --skip_steps "$G_SKIP" \
        --labels prefetch no-prefetch --rtol "$([ "$DEV" = cuda ] && echo 1e-4 || echo 0)" 2>&1); STEP_RC=$?
    [ "$STEP_RC" -ne 0 ] && echo "$DETAIL" >> "$WORK/logs/g_loop_prefetch.log"
elif [ "$G_RCS" != " 200 200" ]; then
    for rc in $G_RCS; do [ "$rc" -ne 0 ] && STEP_RC=$rc && break; done
fi
record g_loop_prefetch "$DETAIL"

# b (continued). compile in fp32 and fp16 (grad scaler) ------------------------------------------
if [ "$DEV" = cuda ]; then
    for dt in fp32 fp16; do
        train_run "b_${dt}_compile" 150 --device cuda --dtype "$dt" --compile
    done
fi

# Summary ----------------------------------------------------------------------------------------
{
    echo "# GPU check summary"
    echo
    echo "- mode: $MODE; total ${SECONDS}s of budget ${BUDGET}s; work dir \`$WORK\`"
    echo "- machine: $("$PY" -c "import torch, platform; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, ' + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU') + f', {platform.python_version()}')" 2>&1)"
    command -v nvidia-smi >/dev/null 2>&1 && echo "- nvidia-smi: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n 1)"
    echo "- git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
    echo
    echo "## Steps"
    echo
    cat "$RESULTS"
    for bench in e_bench_model h_bench_leaderboard; do
        if [ -s "$WORK/logs/$bench.log" ]; then
            echo
            echo "## $bench: scripts/bench_model.py output"
            echo
            echo '```'
            tail -n 40 "$WORK/logs/$bench.log"
            echo '```'
        fi
    done
    if [ -s "$WORK/logs/i_generate.log" ]; then
        echo
        echo "## i_generate: the real run's greedy continuation"
        echo
        echo '```'
        tail -n 20 "$WORK/logs/i_generate.log"
        echo '```'
    fi
    if [ -s "$WORK/logs/a_pytest_gpu.log" ] && grep -q -E "FAILED|ERROR" "$WORK/logs/a_pytest_gpu.log"; then
        echo
        echo "## pytest -m gpu failures"
        echo
        echo '```'
        grep -E "^(FAILED|ERROR)|^E " "$WORK/logs/a_pytest_gpu.log" | head -n 40
        echo '```'
    fi
} > "$SUMMARY"
# Logs and metrics next to the summary when it goes to $OUT, as one archive, so they come back with it.
if [ -n "${OUT:-}" ] && [ "$(dirname "$SUMMARY")" = "$OUT" ]; then
    tar -czf "$OUT/gpu_check_logs.tar.gz" -C "$WORK" logs $(cd "$WORK" && ls -d */metrics.jsonl 2>/dev/null) 2>/dev/null
fi
echo
cat "$SUMMARY"
N_FAIL=$(grep -c '^- FAIL' "$RESULTS")
echo
echo "Summary written to $SUMMARY: $N_FAIL failing step(s)."
[ "$N_FAIL" -eq 0 ]
