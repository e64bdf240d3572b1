#!/usr/bin/env bash
# The model card's ablation: the shipped recipe (a), + margin softmax (b), + distillation (c), both (d),
# at equal budget on the same training set (CelebA subset + LFW people of sets 1-7), each scored on the
# held-out LFW sets 8-10. Needs the outputs of steps 1-3 of recipes/train_shipped_mobilenet.sh (lfw/,
# datasets/, cls_train.txt, datasets/teacher_dlib.npz).
# Usage: bash recipes/ablation.sh [EPOCHS] [SIZE] [RUNS]   (defaults 8 64 "a b c d"; run from the repo root)
# Two runs go side by side with one thread each (2-core CPU); results in logs/ablation_<SIZE>/<run>/.
set -euo pipefail
epochs=${1:-8}
size=${2:-64}
runs=${3:-a b c d}
out=logs/ablation_${size}

common=(--optimizer_type sgd --Init_lr 0.1 --weight_decay 5e-4 --sampler pk --images_per_person 4
        --mining semihard --augment True --batch_size 96 --Epoch "$epochs" --tail_ratio 0.05 --num_workers 0
        --input_shape "$size,$size,3" --lfw_eval_flag False --save_period "$epochs")
margin=(--classifier_loss cosface --cls_scale 32 --cls_margin 0.35)
teacher=(--teacher_path datasets/teacher_dlib.npz --distill_weight 10 --distill_pair_weight 10 --free_images 32)

train_and_score() {
    local name=$1; shift
    local dir=$out/$name
    OMP_NUM_THREADS=1 python train.py "${common[@]}" "$@" --save_dir "$dir" > "$dir.log" 2>&1
    OMP_NUM_THREADS=1 python eval_LFW.py --model_path "$dir/last_epoch_weights.pth" --input_shape "$size,$size,3" \
        --folds 8,9,10 --num_workers 0 --json_save_path "$dir/heldout.json" --png_save_path "$dir/roc.png" \
        > "$dir.eval.log" 2>&1
    echo "$name: $(grep -m1 -E '^ +accuracy ' "$dir.eval.log")"
}

mkdir -p "$out"
pids=()
for run in $runs; do
    case $run in
        a) train_and_score a & ;;
        b) train_and_score b "${margin[@]}" & ;;
        c) train_and_score c "${teacher[@]}" & ;;
        d) train_and_score d "${margin[@]}" "${teacher[@]}" & ;;
        *) echo "unknown run $run (a, b, c or d)" >&2; exit 2 ;;
    esac
    pids+=($!)
    if (( ${#pids[@]} == 2 )); then wait "${pids[@]}"; pids=(); fi
done
wait
