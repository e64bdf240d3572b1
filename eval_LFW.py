"""Evaluate FaceNet weights on LFW: 10-fold verification accuracy, VAL@FAR, AUC, EER, ROC curve.

    python eval_LFW.py --model_path model_data/facenet_mobilenet.pth --lfw_dir_path lfw

Writes the ROC curve to ``png_save_path`` and every number to ``json_save_path``. Copy that JSON
beside the weights as ``<weights stem>.json`` and facenet.py uses its ``threshold``.
"""
#------- settings (edit here or override as --name value) -------
cuda = True                                 # use the GPU when there is one (falls back to the CPU)
backbone = "mobilenet"                      # mobilenet | inception_resnetv1
input_shape = [160, 160, 3]                 # network input [height, width, channels]
model_path = "model_data/facenet_mobilenet.pth"
lfw_dir_path = "lfw"                        # aligned LFW: <name>/<name>_0001.jpg ...
lfw_pairs_path = "model_data/lfw_pair.txt"  # official pairs.txt (10 sets of 300 + 300 pairs)
batch_size = 256
png_save_path = "model_data/roc_test.png"
flip = False                                # also embed the mirror image and add the two embeddings
folds = "all"                               # "all" or the official sets to use, e.g. "8,9,10"
letterbox_image = True                      # keep the aspect ratio (grey padding) when resizing
num_workers = "auto"                        # decoding processes; auto: what fits beside the network (0 on 2 cores)
precision = "fp32"                          # fp32 | bf16 (bfloat16 autocast) | fp16 (CUDA only)
json_save_path = "model_data/lfw_eval.json"
#------------------------------------------------------------------
import hashlib
import time

import torch

from nets.facenet import Facenet
from utils.checkpoint import CheckpointError, load_weights
from utils.config import configure, fail, print_settings, settings_of
from utils.image import ImageError
from utils.lfw import evaluate_lfw, load_pairs, parse_folds, save_json, save_roc_plot
from utils.runtime import SettingError, check_precision, resolve_workers



def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    start = time.perf_counter()
    settings = settings_of(globals())
    device = "cuda" if cuda and torch.cuda.is_available() else "cpu"
    try:
        check_precision(precision, device)
        workers = resolve_workers(num_workers, device == "cuda")
    except SettingError as err:
        fail(err)
    print_settings({**settings, "num_workers": f"{workers} (auto)" if num_workers == "auto" else workers})
    if cuda and device == "cpu":
        print("note: CUDA is not available, running on the CPU")
    try:
        pairs = load_pairs(lfw_pairs_path, lfw_dir_path, parse_folds(folds))
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    model = Facenet(backbone, mode="predict")
    try:
        load_weights(model, model_path, purpose="predict")
    except CheckpointError as err:
        fail(str(err))
    model.to(device)

    try:
        result = evaluate_lfw(model, pairs, input_shape, letterbox_image, batch_size, device, flip=flip,
                              num_workers=workers, precision=precision)
    except ImageError as err:
        fail(f"{err}; fix or replace that file in {lfw_dir_path}")
    wall = time.perf_counter() - start

    fold_list = ",".join(map(str, result["folds"]))
    print(f"\nLFW verification: {result['num_pairs']} pairs ({result['num_same']} same) of folds {fold_list}, "
          f"{result['num_images']} images, flip {'on' if flip else 'off'}, {device} {precision}")
    if result["warning"]:
        print(f"WARNING: {result['warning']}")
    print(f"  accuracy         {result['accuracy_mean']:.5f} +- {result['accuracy_std']:.5f}")
    print(f"  fold accuracies  {' '.join(f'{a:.4f}' for a in result['fold_accuracies'])}")
    print(f"  threshold        {result['threshold_mean']:.5f} +- {result['threshold_std']:.5f}"
          "  (Euclidean distance of L2-normalised embeddings; same person below it)")
    print(f"  VAL@FAR={result['far_target']:g}    {result['val']:.5f} +- {result['val_std']:.5f}"
          f"  (measured FAR {result['far']:.5f})")
    print(f"  AUC              {result['auc']:.5f}")
    print(f"  EER              {result['eer']:.5f}")
    print(f"  same distance    {result['same_distance_mean']:.4f} +- {result['same_distance_std']:.4f}")
    print(f"  diff distance    {result['diff_distance_mean']:.4f} +- {result['diff_distance_std']:.4f}")
    print(f"  speed            {result['num_images']} images in {result['embed_seconds']:.1f} s "
          f"({result['images_per_second']:.1f} images/s, {workers} decoding workers); wall time {wall:.1f} s")

    save_roc_plot(result, png_save_path, title=f"LFW ROC, {backbone}, folds {fold_list}")
    # threshold and input_shape first: facenet.py reads them when this file sits beside the weights.
    save_json({"threshold": result["threshold_mean"], "input_shape": input_shape, **result,
               "wall_seconds": wall, "device": device, "workers": workers,
               "checkpoint": {"path": model_path, "sha256": sha256_of(model_path)}, "settings": settings},
              json_save_path)
    print(f"Saved {png_save_path} and {json_save_path}")


if __name__ == "__main__":
    configure(globals())
    main()
