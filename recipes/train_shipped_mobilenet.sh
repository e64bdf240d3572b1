#!/usr/bin/env bash
# Rebuilds model_data/facenet_mobilenet.pth and its JSON from raw LFW and the CelebA subset, as shipped.
# Usage: bash recipes/train_shipped_mobilenet.sh RAW_LFW_DIR RAW_CELEBA_DIR [ALIGNMENT]   (from the repository root)
# RAW_LFW_DIR holds LFW's <name>/<name>_NNNN.jpg (deep-funneled); RAW_CELEBA_DIR one folder per person.
# ALIGNMENT warp (the default) rebuilds the shipped file: it trains and scores on five-point warps at 112 px,
# with the crop's teacher descriptors of the same photos (step 3b), as recipes/pilots.sh's warp group chose on
# LFW sets 6-7 (docs/model_card.md). crop rebuilds the previous file, trained on the crops themselves.
# Needs the teacher for step 3 only: pip install dlib-bin face_recognition_models==0.3.0
# Measured on a 2-core CPU (no GPU), warp: alignment ~10 min, teacher ~20 min, training ~47 + ~57 min,
# evaluation ~1 min (crop: training ~60 + ~90 min).
set -euo pipefail
raw_lfw=${1:?raw LFW folder}
raw_celeba=${2:?raw CelebA folder}
alignment=${3:-warp}
[[ $alignment == crop || $alignment == warp ]] || { echo "error: ALIGNMENT must be crop or warp, not $alignment" >&2; exit 2; }
annotation=cls_train.txt teacher=datasets/teacher_dlib.npz lfw=lfw logs=logs/mobilenet_112 workers=1

# 1. Align both datasets the same way (MTCNN, crop mode, 160x160, margin 32). LFW gets a centre crop for
#    its single photo without a detected face, so that every evaluation pair has its images.
python align_dataset.py --input_dir "$raw_lfw" --output_dir lfw --mode crop --image_size 160 --margin 32 \
    --no_face centre
python align_dataset.py --input_dir "$raw_celeba" --output_dir aligned/celeba --mode crop --image_size 160 \
    --margin 32

# 2. Training set: the CelebA subset + the LFW people of people.txt sets 1-7 (sets 8-10 stay unseen).
python -m recipes.make_trainset --lfw_dir lfw --extra_dirs aligned/celeba --output_dir datasets
python txt_annotation.py --datasets_path datasets

# 3. The teacher's descriptor of every training image and its mirror (dlib's ResNet; LFW's people were
#    excluded from its training data, and only images of the training set are described).
python -m recipes.teacher_embeddings --annotation_path cls_train.txt --output_path datasets/teacher_dlib.npz

# 3b. warp only: the same photos warped onto ArcFace's five-point template at 112 px, the same people in the
#    training folder, and the teacher's descriptors copied from step 3's by person and file name. The warps
#    are already 112 px, so decoding them takes so little that it stays in the main process (--num_workers
#    0) and both cores run the network.
if [[ $alignment == warp ]]; then
    annotation=cls_train_warp112.txt teacher=datasets_warp112/teacher_dlib.npz lfw=lfw_warp112
    logs=logs/mobilenet_warp112 workers=0
    python align_dataset.py --input_dir "$raw_lfw" --output_dir lfw_warp112 --mode warp --image_size 112 \
        --no_face centre
    python align_dataset.py --input_dir "$raw_celeba" --output_dir aligned/celeba_warp112 --mode warp \
        --image_size 112
    python -m recipes.make_trainset --lfw_dir lfw_warp112 --extra_dirs aligned/celeba_warp112 \
        --output_dir datasets_warp112
    python txt_annotation.py --datasets_path datasets_warp112 --annotation_path "$annotation" \
        --names_path cls_names_warp112.txt
    python -m recipes.teacher_embeddings --annotation_path "$annotation" --output_path "$teacher" \
        --same_photos_path datasets/teacher_dlib.npz
fi

# 4. Stage 1 (seed 11): SGD, identity-balanced batches (16 people x 4 images + 32 images of anyone) with
#    semi-hard mining, light augmentation, 112x112 input, 22 epochs of cosine schedule; triplet loss +
#    cross-entropy + distillation towards the teacher (10 x (1 - cos) + 10 x in-batch similarity mismatch).
#    The margin softmax is not used: it lost in the ablation (recipes/ablation.sh).
python train.py --annotation_path "$annotation" --optimizer_type sgd --Init_lr 0.1 --weight_decay 5e-4 \
    --sampler pk --images_per_person 4 --free_images 32 --mining semihard --augment True --batch_size 96 --Epoch 22 --tail_ratio 0.05 \
    --num_workers "$workers" --input_shape 112,112,3 --teacher_path "$teacher" --distill_weight 10 \
    --distill_pair_weight 10 --lfw_folds 8,9,10 --lfw_dir_path "$lfw" --save_dir "$logs"

# 4b. Stage 2: a new run from stage 1's last weights, without the head's dropout, for 28 more epochs of a
#    fresh cosine schedule at the same peak rate, the in-batch similarity term matching the raw teacher's
#    similarities; all three choices made by recipes/pilots.sh on LFW sets 6-7.
#    LFW sets 8-10 are scored after every epoch for the learning curve only: the shipped weights are the
#    last epoch's, not the best.
python train.py --model_path "$logs/last_epoch_weights.pth" --annotation_path "$annotation" \
    --dropout_keep_prob 1.0 --optimizer_type sgd --Init_lr 0.1 --weight_decay 5e-4 --sampler pk \
    --images_per_person 4 --free_images 32 --mining semihard --augment True --batch_size 96 --Epoch 28 --tail_ratio 0.05 \
    --num_workers "$workers" --input_shape 112,112,3 --teacher_path "$teacher" --distill_weight 10 \
    --distill_pair_weight 10 --distill_pair_target raw --lfw_folds 8,9,10 --lfw_dir_path "$lfw" \
    --save_dir "${logs}_stage2"

# 5. Ship: plain state_dict of the last epoch, then its LFW numbers. The held-out evaluation (sets 8-10,
#    people never seen in training) gives the threshold that facenet.py reads from
#    model_data/facenet_mobilenet.json (--save_threshold True); the all-sets evaluation includes people seen
#    in training.
cp "${logs}_stage2/last_epoch_weights.pth" model_data/facenet_mobilenet.pth
cp "${logs}_stage2/last_epoch_weights.json" model_data/facenet_mobilenet.json
python eval_LFW.py --model_path model_data/facenet_mobilenet.pth --lfw_dir_path "$lfw" --folds 8,9,10 \
    --save_threshold True --json_save_path model_data/lfw_eval_heldout.json --png_save_path model_data/roc_heldout.png
python eval_LFW.py --model_path model_data/facenet_mobilenet.pth --lfw_dir_path "$lfw" \
    --json_save_path model_data/lfw_eval_all_folds.json --png_save_path model_data/roc_all_folds.png
