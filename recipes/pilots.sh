#!/usr/bin/env bash
# Pilots that choose training settings on people that are not LFW sets 8-10 (the stage2 group chose the
# second stage of the shipped recipe): trained on cls_train.txt without the people of LFW sets 6-7.
# Needs steps 1-3 of recipes/train_shipped_mobilenet.sh (lfw/, cls_train.txt, datasets/teacher_dlib.npz).
# Usage: bash recipes/pilots.sh [SIZE] [EPOCHS] [STAGE2_EPOCHS] [GROUPS]   (defaults 64 5 3 "stage2 losses geometry";
# run from the repo root). Two runs go side by side with one thread each (2-core CPU, about 8 minutes a pair
# at the defaults). Each run is scored on the official pairs of sets 6-7 (eval_LFW.py) and by open-set
# identification among the people of sets 6-7 (recipes.eval_identification: rank-1 with one gallery image
# each, known probes named correctly at 1% strangers named); one line each in logs/pilots_<SIZE>/summary.txt,
# after the hashes of the inputs. Two runs of one command on one machine give the same weights bit for bit.
#   stage2:  a  stage-1 recipe (dropout keep 0.5)    b  a without dropout    c  b, distillation only
#            d  b with weight decay 5e-5    e  a continued without dropout at peak lr 0.1    f  e at 0.03
#   losses:  g  b with 3x the in-batch similarity weight    h  b without it
#            i  b with 64 free images a batch (8 people x 4 for the triplets)
#   geometry: j  b matching the raw teacher's in-batch similarities (--distill_pair_target raw)
#             k  j with 3x the in-batch similarity weight            (both groups run b first when absent)
#             l  e matching the raw teacher's similarities (when the stage2 group has trained a)
#   seeds:   a, e and l again at seeds 12 and 13 (a_s12 ...), and a_s12 twice (a_s12_again: do two runs of
#            one command in one checkout agree?)
#   augment: l at seeds 12 and 13 with the augmentation's ranges widened 2x and 3x (m_s12, n_s12 ...; needs
#            the seeds group's a_s12 and a_s13). Rule, fixed before it ran: stage 2 takes the strength whose
#            mean over the two seeds is highest, if it beats l's own (l_s12, l_s13) mean.
#   bank:    l at seeds 12 and 13 with the bank term (--distill_bank_weight): o weight 2 at temperature 0.1,
#            p weight 1 at 0.05 (about the size of the 1 - cos term at the start). Rule as for augment.
#   long:    l, m_s12 and o_s12 again as longer continuations (give STAGE2_EPOCHS 12): l_long, m_long, o_long,
#            three side by side. Rule, fixed before it ran: m or o goes into stage 2 only if it beats l_long
#            by more than 1 point on sets 6-7 (the larger when both do).
#   decay:   l at seeds 12 and 13 with 2x and 4x the weight decay (q_s12: 1e-3, r_s12: 2e-3 ...); rule as for augment.
#   unlabelled: l as a 12-epoch continuation (give STAGE2_EPOCHS 12, seed 12) with 16 of the 32 free images of each
#            batch replaced by new faces of recipes/make_blends.py (blends/, described by the teacher; made from
#            cls_pilot.txt): s_long blends two faces, t_long joins the upper face of one to the lower face of another.
#            Rule, fixed before it ran: the better of s and t goes into stage 2 only if it beats l_long by more
#            than 1 point on sets 6-7.
#   longer:  l_long and t_long again as 40-epoch continuations (give STAGE2_EPOCHS 40): l_40, t_40, side by side,
#            long enough for the student to fit its training faces better than unseen people, as the full run
#            does. Rule, fixed before it ran: t goes into stage 2 only if t_40 beats l_40 by more than 1 point.
#   warp:    the crop's a_s12 and l_long, and their seed-13 twins a_s13 and l_long_s13, then the same two stages on
#            a second alignment: the five-point warp onto ArcFace's template at 112 px (lfw_warp112/,
#            cls_pilot_warp112.txt, its teacher file copied from the crop's by --same_photos_path; steps in
#            docs/model_card.md), where eyes, nose and mouth land on the same pixels in every image.
#            Give STAGE2_EPOCHS 12. a_warp_s12, l_warp_s12 and their seed-13 twins; one seed on each core.
#            Rule, fixed before it ran: the warp replaces the crop in the shipped recipe only if l_warp's mean
#            over seeds 12 and 13 beats l_long's by more than 1 point on sets 6-7 (each scored on its own alignment).
#   warp_stage1: a_s12 and a_warp_s12 alone, side by side, to see whether the warp's lead after stage 1 holds at
#            another input size (give SIZE 112); a check of the warp group's choice, not a choice.
#   full:    the unlabelled group at the shipped recipe's size and lengths (give SIZE 112, EPOCHS 22,
#            STAGE2_EPOCHS 28): a_full (stage 1, seed 11), then l_full (stage 2) and s_full, t_full (stage 2 with
#            the unlabelled group's new faces). Rule, fixed before it runs: as for unlabelled, against l_full.
set -euo pipefail
size=${1:-64}
epochs=${2:-5}
stage2=${3:-3}
groups=${4:-stage2 losses geometry}
out=logs/pilots_${size}
lfw_dir=lfw   # the aligned LFW each run is scored on (the warp groups set their own)
python -m recipes.hold_out_sets --held_out_sets 6,7 --output_path cls_pilot.txt

common=(--annotation_path cls_pilot.txt --optimizer_type sgd --Init_lr 0.1 --weight_decay 5e-4 --sampler pk
        --images_per_person 4 --mining semihard --augment True --batch_size 96 --tail_ratio 0.05 --num_workers 0
        --input_shape "$size,$size,3" --lfw_eval_flag False --teacher_path datasets/teacher_dlib.npz
        --distill_weight 10 --distill_pair_weight 10 --free_images 32)

# 16 of the 32 free images of each batch replaced by new faces (the unlabelled, longer and full groups)
new_faces=(--free_images 16 --unlabelled_teacher_path blends/teacher_dlib.npz --unlabelled_images 16)
# the same photos as five-point warps at 112 px (the warp groups; scored on lfw_warp112)
warp=(--annotation_path cls_pilot_warp112.txt --teacher_path datasets_warp112/teacher_dlib.npz)

train_and_score() {
    local name=$1 length=$2; shift 2
    local dir=$out/$name
    [[ -f $dir/identification_6_7.json ]] && return    # scored already: a rerun goes on with the rest
    OMP_NUM_THREADS=1 python train.py "${common[@]}" --Epoch "$length" --save_period "$length" "$@" \
        --save_dir "$dir" > "$dir.log" 2>&1
    OMP_NUM_THREADS=1 python eval_LFW.py --model_path "$dir/last_epoch_weights.pth" --input_shape "$size,$size,3" \
        --lfw_dir_path "$lfw_dir" --folds 6,7 --num_workers 0 --json_save_path "$dir/sets_6_7.json" \
        --png_save_path "$dir/roc.png" > "$dir.eval.log" 2>&1
    OMP_NUM_THREADS=1 python -m recipes.eval_identification --model_path "$dir/last_epoch_weights.pth" \
        --input_shape "$size,$size,3" --lfw_dir_path "$lfw_dir" --lfw_sets 6,7 --num_workers 0 --small_galleries "" \
        --json_save_path "$dir/identification_6_7.json" > "$dir.ident.log" 2>&1
    local ident
    ident=$(grep -A3 -m1 '^One image per person' "$dir.ident.log" | grep -E 'rank-1|chosen threshold' | tr -s ' ')
    echo "$name $*: $(grep -m1 -E '^ +accuracy ' "$dir.eval.log" | tr -s ' ');$(echo $ident)" >> "$out/summary.txt"
}

mkdir -p "$out"
sha256sum cls_pilot.txt datasets/teacher_dlib.npz >> "$out/summary.txt"   # the inputs, to compare checkouts
if [[ " $groups " == *" stage2 "* ]]; then
    train_and_score a "$epochs" & train_and_score b "$epochs" --dropout_keep_prob 1.0 & wait
    train_and_score c "$epochs" --dropout_keep_prob 1.0 --triplet_weight 0 --ce_weight 0 &
    train_and_score d "$epochs" --dropout_keep_prob 1.0 --weight_decay 5e-5 & wait
    from_a=(--model_path "$out/a/last_epoch_weights.pth" --dropout_keep_prob 1.0)
    train_and_score e "$stage2" "${from_a[@]}" & train_and_score f "$stage2" "${from_a[@]}" --Init_lr 0.03 & wait
fi
if [[ " $groups " == *" losses "* ]]; then
    train_and_score b "$epochs" --dropout_keep_prob 1.0 &   # the baseline (skipped when scored already)
    train_and_score g "$epochs" --dropout_keep_prob 1.0 --distill_pair_weight 30 & wait
    train_and_score h "$epochs" --dropout_keep_prob 1.0 --distill_pair_weight 0 &
    train_and_score i "$epochs" --dropout_keep_prob 1.0 --free_images 64 & wait
fi
if [[ " $groups " == *" geometry "* ]]; then
    train_and_score b "$epochs" --dropout_keep_prob 1.0 &
    train_and_score j "$epochs" --dropout_keep_prob 1.0 --distill_pair_target raw & wait
    if [[ -f $out/a/last_epoch_weights.pth ]]; then
        train_and_score l "$stage2" --model_path "$out/a/last_epoch_weights.pth" --dropout_keep_prob 1.0 \
            --distill_pair_target raw &
    fi
    train_and_score k "$epochs" --dropout_keep_prob 1.0 --distill_pair_target raw --distill_pair_weight 30 & wait
fi
if [[ " $groups " == *" seeds "* ]]; then
    train_and_score a_s12 "$epochs" --seed 12 & train_and_score a_s12_again "$epochs" --seed 12 & wait
    train_and_score a_s13 "$epochs" --seed 13 &
    from_a12=(--model_path "$out/a_s12/last_epoch_weights.pth" --dropout_keep_prob 1.0 --seed 12)
    from_a13=(--model_path "$out/a_s13/last_epoch_weights.pth" --dropout_keep_prob 1.0 --seed 13)
    train_and_score e_s12 "$stage2" "${from_a12[@]}" & wait
    train_and_score l_s12 "$stage2" "${from_a12[@]}" --distill_pair_target raw &
    train_and_score e_s13 "$stage2" "${from_a13[@]}" & wait
    train_and_score l_s13 "$stage2" "${from_a13[@]}" --distill_pair_target raw & wait
fi
if [[ " $groups " == *" augment "* ]]; then
    for seed in 12 13; do
        from_a=(--model_path "$out/a_s$seed/last_epoch_weights.pth" --dropout_keep_prob 1.0 --seed "$seed"
                --distill_pair_target raw)
        train_and_score "m_s$seed" "$stage2" "${from_a[@]}" --augment_strength 2 &
        train_and_score "n_s$seed" "$stage2" "${from_a[@]}" --augment_strength 3 & wait
    done
fi
if [[ " $groups " == *" bank "* ]]; then
    for seed in 12 13; do
        from_a=(--model_path "$out/a_s$seed/last_epoch_weights.pth" --dropout_keep_prob 1.0 --seed "$seed"
                --distill_pair_target raw)
        train_and_score "o_s$seed" "$stage2" "${from_a[@]}" --distill_bank_weight 2 --distill_bank_temperature 0.1 &
        train_and_score "p_s$seed" "$stage2" "${from_a[@]}" --distill_bank_weight 1 --distill_bank_temperature 0.05 &
        wait
    done
fi
if [[ " $groups " == *" decay "* ]]; then
    for seed in 12 13; do
        from_a=(--model_path "$out/a_s$seed/last_epoch_weights.pth" --dropout_keep_prob 1.0 --seed "$seed"
                --distill_pair_target raw)
        train_and_score "q_s$seed" "$stage2" "${from_a[@]}" --weight_decay 1e-3 &
        train_and_score "r_s$seed" "$stage2" "${from_a[@]}" --weight_decay 2e-3 & wait
    done
fi
if [[ " $groups " == *" long "* ]]; then
    from_a=(--model_path "$out/a_s12/last_epoch_weights.pth" --dropout_keep_prob 1.0 --seed 12
            --distill_pair_target raw)
    train_and_score l_long "$stage2" "${from_a[@]}" &
    train_and_score m_long "$stage2" "${from_a[@]}" --augment_strength 2 &
    train_and_score o_long "$stage2" "${from_a[@]}" --distill_bank_weight 2 --distill_bank_temperature 0.1 & wait
fi
if [[ " $groups " == *" unlabelled "* ]]; then
    from_a=(--model_path "$out/a_s12/last_epoch_weights.pth" --dropout_keep_prob 1.0 --seed 12
            --distill_pair_target raw)
    train_and_score s_long "$stage2" "${from_a[@]}" "${new_faces[@]}" --unlabelled_path blends/mix.txt &
    train_and_score t_long "$stage2" "${from_a[@]}" "${new_faces[@]}" --unlabelled_path blends/cut.txt & wait
fi
if [[ " $groups " == *" longer "* ]]; then
    from_a=(--model_path "$out/a_s12/last_epoch_weights.pth" --dropout_keep_prob 1.0 --seed 12
            --distill_pair_target raw)
    train_and_score l_40 "$stage2" "${from_a[@]}" &
    train_and_score t_40 "$stage2" "${from_a[@]}" "${new_faces[@]}" --unlabelled_path blends/cut.txt & wait
fi
if [[ " $groups " == *" full "* ]]; then
    train_and_score a_full "$epochs"
    from_a=(--model_path "$out/a_full/last_epoch_weights.pth" --dropout_keep_prob 1.0 --distill_pair_target raw)
    train_and_score l_full "$stage2" "${from_a[@]}" &
    train_and_score s_full "$stage2" "${from_a[@]}" "${new_faces[@]}" --unlabelled_path blends/mix.txt & wait
    train_and_score t_full "$stage2" "${from_a[@]}" "${new_faces[@]}" --unlabelled_path blends/cut.txt
fi
if [[ " $groups " == *" warp "* ]]; then
    crop_then_warp() {   # one seed on one core: the crop's stage 1 and l_long, then the warp's
        local seed=$1 crop_name=$2
        train_and_score "a_s$seed" "$epochs" --seed "$seed"
        train_and_score "$crop_name" "$stage2" --model_path "$out/a_s$seed/last_epoch_weights.pth" \
            --dropout_keep_prob 1.0 --seed "$seed" --distill_pair_target raw
        lfw_dir=lfw_warp112   # this function runs in its own subshell: the other seed's runs keep theirs
        train_and_score "a_warp_s$seed" "$epochs" "${warp[@]}" --seed "$seed"
        train_and_score "l_warp_s$seed" "$stage2" "${warp[@]}" \
            --model_path "$out/a_warp_s$seed/last_epoch_weights.pth" --dropout_keep_prob 1.0 --seed "$seed" --distill_pair_target raw
    }
    crop_then_warp 12 l_long & crop_then_warp 13 l_long_s13 & wait
fi
if [[ " $groups " == *" warp_stage1 "* ]]; then
    train_and_score a_s12 "$epochs" --seed 12 &
    (lfw_dir=lfw_warp112; train_and_score a_warp_s12 "$epochs" "${warp[@]}" --seed 12) & wait
fi
cat "$out/summary.txt"
