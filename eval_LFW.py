"""Evaluate FaceNet weights on LFW: 10-fold verification accuracy, VAL@FAR, AUC, EER, ROC curve.

    python eval_LFW.py --model_path model_data/facenet_mobilenet.pth --lfw_dir_path lfw
    python eval_LFW.py --bin_path faces_webface_112x112               # every .bin there, one row per set
    python eval_LFW.py --bin_path lfw.bin,cfp_fp.bin --pairs_list_path calfw/pairs_CALFW.txt

The backbone and input size come from the JSON beside the weights unless given. Writes the ROC
curve to ``png_save_path`` and every number to ``json_save_path``; copy that JSON beside the
weights as ``<weights stem>.json`` and facenet.py uses its ``threshold``.
"""
#------- settings (edit here or override as --name value) -------
cuda = True                                 # use the GPU when there is one (falls back to the CPU)
backbone = None                             # mobilenet | inception_resnetv1; None: from <model_path>.json or the weights
input_shape = None                          # [height, width, 3]; None: from <model_path>.json, else 160,160,3
model_path = "model_data/facenet_mobilenet.pth"
lfw_dir_path = "lfw"                        # aligned LFW: <name>/<name>_0001.jpg ...
lfw_pairs_path = "model_data/lfw_pair.txt"  # official pairs.txt (10 sets of 300 + 300 pairs)
batch_size = 256                            # images decoded together (at least 1)
png_save_path = "model_data/roc_test.png"   # ROC curve; any format matplotlib writes (.png, .pdf, .svg ...)
flip = False                                # also embed the mirror image and add the two embeddings
folds = "all"                               # "all" or the official sets to use, e.g. "8,9,10"
letterbox_image = True                      # keep the aspect ratio (grey padding) when resizing
num_workers = "auto"                        # decoding processes; auto: what fits beside the network (0 on 2 cores)
precision = "fp32"                          # fp32 | bf16 (bfloat16 autocast) | fp16 (CUDA only)
json_save_path = "model_data/lfw_eval.json"
bin_path = ""                               # .bin sets (lfw.bin, cfp_fp.bin ...): files or folders, comma-separated;
                                            # scored instead of the LFW folder, one row per set
pairs_list_path = ""                        # CALFW / CPLFW lists (pairs_CALFW.txt ...), comma-separated; their
                                            # images in "aligned images" beside each
bin_folds = 10                              # folds of consecutive pairs in a .bin (insightface's protocol)
#------------------------------------------------------------------
import time

import torch

from nets.facenet import BACKBONES, Facenet
from utils.alignment import alignment_of, folder_alignment, mismatch_warning
from utils.checkpoint import (figure_extensions, file_sha256, load_weights, model_settings, read_weights_info,
                              write_json)
from utils.config import (Bool, Choice, Int, Opt, OutputFile, Shape, Text, UserError, check_values, configure,
                          print_settings, run_main, settings_of)
from utils.image import ImageError
from utils.lfw import evaluate_lfw, load_pairs, parse_folds, save_roc_plot
from utils.runtime import PRECISIONS, check_precision, resolve_workers
from utils.valsets import LFW_FOLDER_SET, load_sets, score_sets, table


# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "cuda": Bool(), "backbone": Opt(Choice(*BACKBONES)), "input_shape": Opt(Shape()), "model_path": Text(),
    "lfw_dir_path": Text(), "lfw_pairs_path": Text(), "batch_size": Int(1),
    "png_save_path": OutputFile(figure_extensions), "flip": Bool(), "folds": Text(), "letterbox_image": Bool(),
    "num_workers": Choice("auto") | Int(0), "precision": Choice(*PRECISIONS), "json_save_path": OutputFile(".json"),
    "bin_path": Text(), "pairs_list_path": Text(), "bin_folds": Int(2),
}


def check_settings() -> None:
    """Every setting checked before anything is loaded; a bad one is a UserError naming it."""
    check_values(settings_of(globals()), RULES)
    parse_folds(folds)


def main() -> None:
    start = time.perf_counter()
    check_settings()
    device = "cuda" if cuda and torch.cuda.is_available() else "cpu"
    check_precision(precision, device)
    workers = resolve_workers(num_workers, device == "cuda")
    found = model_settings(model_path, backbone, input_shape)
    for message in found.messages:
        print(message)
    settings = {**settings_of(globals()), "backbone": found.backbone, "input_shape": found.input_shape}
    print_settings({**settings, "num_workers": f"{workers} (auto)" if num_workers == "auto" else workers})
    if cuda and device == "cpu":
        print("note: CUDA is not available, running on the CPU")
    # -- .bin sets and CALFW / CPLFW lists (utils/valsets.py) are scored instead of the LFW folder
    trained = alignment_of(read_weights_info(model_path), model_path)
    sets = load_sets(f"{bin_path},{pairs_list_path}", bin_folds) if bin_path or pairs_list_path else None
    if sets is None:
        pairs = load_pairs(lfw_pairs_path, lfw_dir_path, parse_folds(str(folds)))
        sets_warnings = [mismatch_warning(trained, folder_alignment(lfw_dir_path), lfw_dir_path)]
    else:
        sets_warnings = [mismatch_warning(trained, s.alignment, s.path) for s in sets]
    for message in filter(None, sets_warnings):
        print(message)
    # -- end of the sets
    model = Facenet(found.backbone, mode="predict")
    load_weights(model, model_path, purpose="predict")
    model.to(device)
    if sets is not None:
        return report_sets(model, sets, found, device, workers, settings, start)

    try:
        result = evaluate_lfw(model, pairs, found.input_shape, letterbox_image, batch_size, device, flip=flip,
                              num_workers=workers, precision=precision, impostors=True)
    except ImageError as err:
        raise UserError(f"{err}; fix or replace that file in {lfw_dir_path}") from None
    wall = time.perf_counter() - start

    fold_list = ",".join(map(str, result["folds"]))
    print(f"\nLFW verification: {result['num_pairs']} pairs ({result['num_same']} same) of folds {fold_list}, "
          f"{result['num_images']} images at {found.input_shape[0]}x{found.input_shape[1]}, "
          f"flip {'on' if flip else 'off'}, {device} {precision}")
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
    print(f"  1:N statistics   impostor distances of {result['impostors']['measured_on']} (key 'impostors'): "
          "predict.py's identify and dir modes derive their threshold from them")
    print(f"  speed            {result['num_images']} images in {result['embed_seconds']:.1f} s "
          f"({result['images_per_second']:.1f} images/s, {workers} decoding workers); wall time {wall:.1f} s")

    save_roc_plot(result, png_save_path, title=f"LFW ROC, {found.backbone}, folds {fold_list}")
    # backbone, threshold and input_shape first: facenet.py reads them when this file sits beside the weights.
    write_json(json_save_path, {"backbone": found.backbone, "threshold": result["threshold_mean"],
                                "input_shape": found.input_shape, **result, "wall_seconds": wall, "device": device,
                                "workers": workers,
                                "checkpoint": {"path": model_path, "sha256": file_sha256(model_path)},
                                "settings": settings})
    print(f"Saved {png_save_path} and {json_save_path}")


def report_sets(model, sets: list, found, device: str, workers: int, settings: dict, start: float) -> None:
    """Score the .bin sets and pairs lists: one row per set, one ROC curve per set, every number in the JSON."""
    results = score_sets(model, sets, found.input_shape, letterbox_image, batch_size, device, flip=flip,
                         num_workers=workers, precision=precision)
    wall = time.perf_counter() - start
    print(f"\nVerification at {found.input_shape[0]}x{found.input_shape[1]}, flip {'on' if flip else 'off'}, "
          f"{device} {precision}; 10-fold protocol ({bin_folds} folds of consecutive pairs in a .bin)")
    print("\n".join(table(results)))
    print(f"  wall time {wall:.1f} s")
    save_roc_plot(results, png_save_path, title=f"ROC, {found.backbone}")
    lfw = results.get(LFW_FOLDER_SET)
    write_json(json_save_path, {"backbone": found.backbone, "threshold": lfw["threshold_mean"] if lfw else None,
                                "input_shape": found.input_shape,
                                "sets": {n: {"path": s.path, **results[n]} for n, s in
                                         ((s.name, s) for s in sets)},
                                "wall_seconds": wall, "device": device, "workers": workers,
                                "checkpoint": {"path": model_path, "sha256": file_sha256(model_path)},
                                "settings": settings})
    print(f"Saved {png_save_path} and {json_save_path}")


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
