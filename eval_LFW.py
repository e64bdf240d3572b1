"""Evaluate FaceNet weights on LFW: 10-fold verification accuracy, VAL@FAR, AUC, EER, ROC curve.

    python eval_LFW.py --model_path model_data/facenet_mobilenet.pth --lfw_dir_path lfw
    python eval_LFW.py --bin_path faces_webface_112x112               # every .bin there, one row per set
    python eval_LFW.py --bin_path lfw.bin,cfp_fp.bin --pairs_list_path calfw/pairs_CALFW.txt

The backbone and input size come from the JSON beside the weights unless given. Writes the ROC
curve to ``png_save_path`` and every number to ``json_save_path`` (both under logs/ by default);
``--save_threshold True`` also records the measured threshold, what it was measured on and the
impostor table in the weights' own JSON (``<model_path without .pth>.json``), where predict.py
reads them. A collapsed model (every face mapped to about one point) is named as such and gives no
threshold; a folder of raw, unaligned LFW photos gets a warning.
"""
#------- settings (edit here or override as --name value) -------
cuda = True                                 # use the GPU when there is one (falls back to the CPU)
backbone = None                             # mobilenet | inception_resnetv1; None: from <model_path>.json or the weights
input_shape = None                          # [height, width, 3]; None: from <model_path>.json, else 160,160,3
model_path = "model_data/facenet_mobilenet.pth"
lfw_dir_path = "lfw"                        # aligned LFW: <name>/<name>_0001.jpg ...
lfw_pairs_path = "model_data/lfw_pair.txt"  # official pairs.txt (10 sets of 300 + 300 pairs)
batch_size = 256                            # images decoded together (at least 1)
png_save_path = "logs/roc_test.png"         # ROC curve; any format matplotlib writes (.png, .pdf, .svg ...)
flip = False                                # also embed the mirror image and add the two embeddings
folds = "all"                               # "all" or the official sets to use, e.g. "8,9,10"
letterbox_image = True                      # keep the aspect ratio (grey padding) when resizing
num_workers = "auto"                        # decoding processes; auto: what fits beside the network (0 on 2 cores)
precision = "fp32"                          # fp32 | bf16 (bfloat16 autocast) | fp16 (CUDA only)
json_save_path = "logs/lfw_eval.json"       # every number of the evaluation, the ROC curve included
bin_path = ""                               # .bin sets (lfw.bin, cfp_fp.bin ...): files or folders, comma-separated;
                                            # scored instead of the LFW folder, one row per set
pairs_list_path = ""                        # CALFW / CPLFW lists (pairs_CALFW.txt ...), comma-separated; their
                                            # images in "aligned images" beside each
bin_folds = 10                              # folds of consecutive pairs in a .bin (insightface's protocol)
save_threshold = False                      # True: write the measured threshold into <model_path>.json
#------------------------------------------------------------------
import math
import os
import time

import torch

from nets.facenet import BACKBONES, FacenetNet
from utils.alignment import alignment_of, folder_alignment, mismatch_warning
from utils.checkpoint import (figure_extensions, file_sha256, load_weights, model_settings, read_weights_info,
                              record_threshold, weights_info_path, write_json)
from utils.config import (Bool, Choice, Int, Opt, OutputFile, Shape, Text, UserError, configure,
                          print_settings, run_main, settings_of)
from utils.image import ImageError
from utils.lfw import evaluate_lfw, load_pairs, parse_folds, save_roc_plot, unaligned_warning
from utils.open_set import TABLE_KEY
from utils.runtime import PRECISIONS, check_precision, resolve_workers
from utils.valsets import LFW_FOLDER_SET, load_sets, score_sets, table


# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "cuda": Bool(), "backbone": Opt(Choice(*BACKBONES)), "input_shape": Opt(Shape()), "model_path": Text(),
    "lfw_dir_path": Text(), "lfw_pairs_path": Text(), "batch_size": Int(1),
    "png_save_path": OutputFile(figure_extensions), "flip": Bool(), "folds": Text(), "letterbox_image": Bool(),
    "num_workers": Choice("auto") | Int(0), "precision": Choice(*PRECISIONS), "json_save_path": OutputFile(".json"),
    "bin_path": Text(), "pairs_list_path": Text(), "bin_folds": Int(2), "save_threshold": Bool(),
}


def check_settings() -> None:
    """The checks that RULES (applied by configure) cannot make: folds, and outputs that name an input."""
    parse_folds(str(folds))
    inputs = {"--model_path": model_path, "the weights' JSON": weights_info_path(model_path),
              "--lfw_pairs_path": lfw_pairs_path}
    for name, output in (("png_save_path", png_save_path), ("json_save_path", json_save_path)):
        for what, path in inputs.items():
            if os.path.realpath(output) == os.path.realpath(path):
                raise UserError(f"--{name} {output} is {what}, an input of this run; write the evaluation "
                                "elsewhere (by default under logs/)" +
                                (" and give --save_threshold True to record the threshold there"
                                 if path.endswith(".json") else ""))


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
        sets_warnings = [mismatch_warning(trained, folder_alignment(lfw_dir_path), lfw_dir_path),
                         unaligned_warning(lfw_dir_path, pairs.paths)]
    else:
        sets_warnings = [mismatch_warning(trained, s.alignment, s.path) for s in sets]
    for message in filter(None, sets_warnings):
        print(message)
    # -- end of the sets
    model = FacenetNet(found.backbone)
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
    print_lfw(result, found, device, workers, wall)
    fold_list = ",".join(map(str, result["folds"]))
    save_roc_plot(result, png_save_path, title=f"LFW ROC, {found.backbone}, folds {fold_list}")
    save_evaluation(result, found, device, workers, settings, wall)
    measured_on = {"set": f"LFW folds {fold_list} in {lfw_dir_path}", "pairs": result["num_pairs"],
                   "accuracy": result["accuracy_mean"], "flip": flip, "precision": precision}
    record(found, result, measured_on, {TABLE_KEY: result[TABLE_KEY]})


def print_lfw(result: dict, found, device: str, workers: int, wall: float) -> None:
    """The LFW numbers as a block of lines, a warning first when there is one."""
    print(f"\nLFW verification: {result['num_pairs']} pairs ({result['num_same']} same) of folds "
          f"{','.join(map(str, result['folds']))}, {result['num_images']} images at "
          f"{found.input_shape[0]}x{found.input_shape[1]}, flip {'on' if flip else 'off'}, {device} {precision}")
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
    print(f"  1:N statistics   impostor distances of {result[TABLE_KEY]['measured_on']} (key '{TABLE_KEY}'): "
          "predict.py's identify and dir modes derive their threshold from them")
    print(f"  speed            {result['num_images']} images in {result['embed_seconds']:.1f} s "
          f"({result['images_per_second']:.1f} images/s, {workers} decoding workers); wall time {wall:.1f} s")


def save_evaluation(result: dict, found, device: str, workers: int, settings: dict, wall: float) -> None:
    """Every number of the run, the ROC curve included, in ``json_save_path``; no threshold from a collapsed
    model."""
    threshold = None if result.get("collapsed") else result.get("threshold_mean")
    write_json(json_save_path, {"backbone": found.backbone, "threshold": threshold, "input_shape": found.input_shape,
                                **result, "wall_seconds": wall, "device": device, "workers": workers,
                                "checkpoint": {"path": model_path, "sha256": file_sha256(model_path)},
                                "settings": settings})
    print(f"Saved {png_save_path} and {json_save_path}")


def record(found, result: dict | None, measured_on: dict, extra: dict) -> None:
    """With --save_threshold True, the measured threshold into the weights' JSON, unless there is none
    (a collapsed model, or no LFW set); otherwise say how to keep it."""
    where = weights_info_path(model_path)
    threshold = result.get("threshold_mean") if result else None
    if result is None or result.get("collapsed") or threshold is None or not math.isfinite(threshold):
        if save_threshold:
            why = "the model has collapsed" if result and result.get("collapsed") else "no LFW threshold measured"
            print(f"threshold not saved: {why}; {where} is left as it was")
        return
    if not save_threshold:
        print(f"To use this threshold in predict.py, run again with --save_threshold True (writes {where})")
        return
    path = record_threshold(model_path, found.backbone, found.input_shape, threshold, measured_on, extra)
    print(f"Saved threshold {threshold:.4f} in {path}")


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
    threshold = lfw["threshold_mean"] if lfw and not lfw.get("collapsed") else None
    write_json(json_save_path, {"backbone": found.backbone, "threshold": threshold,
                                "input_shape": found.input_shape,
                                "sets": {n: {"path": s.path, **results[n]} for n, s in
                                         ((s.name, s) for s in sets)},
                                "wall_seconds": wall, "device": device, "workers": workers,
                                "checkpoint": {"path": model_path, "sha256": file_sha256(model_path)},
                                "settings": settings})
    print(f"Saved {png_save_path} and {json_save_path}")
    path = next((s.path for s in sets if s.name == LFW_FOLDER_SET), "")
    record(found, lfw, {"set": f"{LFW_FOLDER_SET} {path}", "pairs": lfw["num_pairs"] if lfw else 0,
                        "accuracy": lfw["accuracy_mean"] if lfw else None, "flip": flip, "precision": precision}, {})


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
